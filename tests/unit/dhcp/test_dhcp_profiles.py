"""Vendor profiles: byte-exact encodings per vendor, matching rules, and config errors that say what to fix."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from server.dhcp.profiles import (
    MatchKind,
    ProfileTable,
    builtin_profiles,
    profile_from_mapping,
)
from server.registry.model import ProvisioningEndpoint

FP = "0123456789abcdef" * 4
EP = ProvisioningEndpoint("https", "imprint.example.net", 8443, "/provision", FP)
SERVER_IP = "198.18.77.1"


def table(
    *site: dict[str, Any], endpoint: ProvisioningEndpoint = EP, builtins: bool = True
) -> ProfileTable:
    return ProfileTable(
        [profile_from_mapping(d) for d in site], endpoint, SERVER_IP, builtins=builtins
    )


def options_for(
    vendor_class: bytes | None, prl: bytes = b"", t: ProfileTable | None = None
) -> tuple[str, dict[int, bytes]]:
    match = (t or table()).select(vendor_class, prl)
    assert match is not None
    return match.profile.name, dict(match.options)


def test_ms_uc_client_option_43_sub_options_byte_exact() -> None:
    name, opts = options_for(b"MS-UC-Client")
    assert name == "ms-uc-client"
    expected = (
        bytes([1, 12])
        + b"MS-UC-Client"
        + bytes([2, 5])
        + b"https"
        + bytes([3, 19])
        + b"imprint.example.net"
        + bytes([4, 4])
        + b"8443"
        + bytes([5, 10])
        + b"/provision"
        + bytes([6, 64])
        + FP.encode()
    )
    assert opts[43] == expected


def test_ms_uc_client_leaves_out_the_pin_when_there_is_no_certificate() -> None:
    ep = ProvisioningEndpoint("http", "imprint.example.net", 8080, "/provision", "")
    _, opts = options_for(b"MS-UC-Client", t=table(endpoint=ep))
    assert opts[43].endswith(bytes([5, 10]) + b"/provision")


def test_ms_uc_client_option_120_is_rfc3361_label_form() -> None:
    _, opts = options_for(b"MS-UC-Client")
    assert opts[120] == b"\x00\x07imprint\x07example\x03net\x00"


def test_ms_uc_client_option_120_with_an_ipv4_host_uses_encoding_1() -> None:
    ep = ProvisioningEndpoint("https", "198.18.77.1", 443, "/p", "")
    _, opts = options_for(b"MS-UC-Client", t=table(endpoint=ep))
    assert opts[120] == b"\x01" + bytes([198, 18, 77, 1])
    assert opts[43].endswith(bytes([4, 3]) + b"443" + bytes([5, 2]) + b"/p")


def test_ms_uc_client_match_is_case_sensitive_and_exact() -> None:
    assert options_for(b"ms-uc-client")[0] == "generic"
    assert options_for(b"MS-UC-Client-2")[0] == "generic"


def test_polycom_prefix_gets_160_and_66_as_text_url() -> None:
    name, opts = options_for(b"Polycom-VVX400")
    assert name == "polycom"
    assert opts == {
        160: b"https://imprint.example.net:8443/provision",
        66: b"https://imprint.example.net:8443/provision",
    }


def test_yealink_gets_66_text_url() -> None:
    assert options_for(b"yealink") == (
        "yealink",
        {66: b"https://imprint.example.net:8443/provision"},
    )


def test_cisco_gets_150_as_four_octet_server_address() -> None:
    name, opts = options_for(b"Cisco Systems, Inc. IP Phone CP-8845")
    assert name == "cisco-ip-phone"
    assert opts == {150: bytes([198, 18, 77, 1])}


def test_onie_prefix_gets_114_text_url() -> None:
    assert options_for(b"onie_vendor:x86_64-accton_as7712_32x-r0") == (
        "onie",
        {114: b"https://imprint.example.net:8443/provision"},
    )


def test_sztp_is_matched_by_requesting_143_and_uses_2_octet_length_prefixes() -> None:
    url = b"https://imprint.example.net:8443/provision"
    name, opts = options_for(None, prl=bytes([1, 3, 143]))
    assert name == "sztp"
    assert opts == {143: len(url).to_bytes(2, "big") + url}


def test_generic_default_sends_url_in_224_and_fingerprint_in_225() -> None:
    name, opts = options_for(b"something-else")
    assert name == "generic"
    assert opts == {224: b"https://imprint.example.net:8443/provision", 225: FP.encode()}


def test_generic_default_leaves_out_225_without_a_fingerprint() -> None:
    ep = ProvisioningEndpoint("http", "imprint.lab", 80, "/provision", "")
    _, opts = options_for(None, t=table(endpoint=ep))
    assert opts == {224: b"http://imprint.lab/provision"}


def test_builtins_are_in_documented_order_with_generic_last() -> None:
    names = [p.name for p in builtin_profiles()]
    assert names == [
        "ms-uc-client",
        "polycom",
        "yealink",
        "cisco-ip-phone",
        "onie",
        "sztp",
        "generic",
    ]
    assert builtin_profiles()[-1].match_kind is MatchKind.ANY


def test_site_profiles_come_before_builtins_and_first_match_wins() -> None:
    t = table(
        {
            "name": "acme-uc",
            "match": "MS-UC-",
            "match_kind": "prefix",
            "options": [{"code": 43, "encoding": "text", "value": "{url}"}],
        },
        {
            "name": "site-default",
            "match_kind": "any",
            "options": [
                {
                    "code": 43,
                    "encoding": "sub-options",
                    "value": {"1": "{url}", "2": "{fingerprint}"},
                }
            ],
        },
    )
    assert options_for(b"MS-UC-Client", t=t) == (
        "acme-uc",
        {43: b"https://imprint.example.net:8443/provision"},
    )
    url = b"https://imprint.example.net:8443/provision"
    assert options_for(b"yealink", t=t) == (
        "site-default",
        {43: bytes([1, len(url)]) + url + bytes([2, 64]) + FP.encode()},
    )


def test_without_builtins_an_unmatched_client_gets_no_profile() -> None:
    assert table(builtins=False).select(b"yealink", b"") is None


def test_profile_from_toml_with_every_encoding() -> None:
    doc = tomllib.loads(
        """
        [[dhcp.profiles]]
        name = "lab-switches"
        match = "LabSwitch"
        match_kind = "exact"

          [[dhcp.profiles.options]]
          code = 143
          encoding = "uri-list-16"
          value = ["{url}", "http://{server_ip}:8080{path}"]

          [[dhcp.profiles.options]]
          code = 150
          encoding = "ipv4-list"
          value = "{server_ip}, 198.18.77.2"

          [[dhcp.profiles.options]]
          code = 119
          encoding = "dns-labels"
          value = ["lab.example", "example"]

          [[dhcp.profiles.options]]
          code = 125
          encoding = "hex"
          value = "00 00 a6 7f 03 01 01 41"

          [[dhcp.profiles.options]]
          code = 43
          encoding = "sub-options"
          value = { 1 = "{scheme}", 7 = "{host}:{port}" }

          [[dhcp.profiles.options]]
          code = 224
          value = "{{literal}} {path}"
        """
    )
    profile = profile_from_mapping(doc["dhcp"]["profiles"][0])
    _, opts = options_for(b"LabSwitch", t=table(doc["dhcp"]["profiles"][0]))
    assert profile.name == "lab-switches"
    u1 = b"https://imprint.example.net:8443/provision"
    u2 = b"http://198.18.77.1:8080/provision"
    assert opts[143] == len(u1).to_bytes(2, "big") + u1 + len(u2).to_bytes(2, "big") + u2
    assert opts[150] == bytes([198, 18, 77, 1, 198, 18, 77, 2])
    assert opts[119] == b"\x03lab\x07example\x00\x07example\x00"
    assert opts[125] == bytes.fromhex("0000a67f03010141")
    assert opts[43] == bytes([1, 5]) + b"https" + bytes([7, 24]) + b"imprint.example.net:8443"
    assert opts[224] == b"{literal} /provision"
    assert list(opts) == [143, 150, 119, 125, 43, 224]


GOOD: dict[str, Any] = {
    "name": "p1",
    "match": "Vendor",
    "match_kind": "exact",
    "options": [{"code": 66, "encoding": "text", "value": "{url}"}],
}


def _with(**changes: Any) -> dict[str, Any]:
    d = dict(GOOD)
    d.update(changes)
    return d


def _opt(**changes: Any) -> dict[str, Any]:
    o: dict[str, Any] = {"code": 66, "encoding": "text", "value": "{url}"}
    o.update(changes)
    return _with(options=[o])


@pytest.mark.parametrize(
    ("mapping", "fragments"),
    [
        ({"match": "x", "options": []}, ["no name", "name ="]),
        (_with(colour="red"), ["dhcp.profiles[p1].colour", "unknown key", "allowed keys"]),
        (_with(match_kind="regex"), ["dhcp.profiles[p1].match_kind", "'regex'", "exact, prefix"]),
        (_with(match=""), ["dhcp.profiles[p1].match", "vendor class"]),
        (_with(match_kind="requested", match="abc"), ["dhcp.profiles[p1].match", "option code"]),
        (_with(match_kind="requested", match=999), ["dhcp.profiles[p1].match", "1 to 254"]),
        (_with(match_kind="any", match="x"), ["dhcp.profiles[p1].match", "remove match"]),
        (_with(options=[]), ["dhcp.profiles[p1].options", "at least one"]),
        (_with(options=["66=url"]), ["dhcp.profiles[p1].options[0]", "table"]),
        (_opt(code=300), ["dhcp.profiles[p1].options[0].code", "1 to 254"]),
        (_opt(code=53), ["dhcp.profiles[p1].options[0].code", "responder"]),
        (_opt(code=82), ["dhcp.profiles[p1].options[0].code", "responder"]),
        (
            _opt(encoding="txt"),
            ["dhcp.profiles[p1].options[0].encoding", "'txt'", "text, ipv4-list"],
        ),
        (_opt(value="{secret}"), ["dhcp.profiles[p1].options[0].value", "{secret}", "{url}"]),
        (
            _opt(value="{url.__class__}"),
            ["dhcp.profiles[p1].options[0].value", "not a placeholder"],
        ),
        (_opt(value="{url!r}"), ["dhcp.profiles[p1].options[0].value", "not a placeholder"]),
        (_opt(value="{url"), ["dhcp.profiles[p1].options[0].value", "not a valid template"]),
        (_opt(value=["{url}", "{host}"]), ["dhcp.profiles[p1].options[0].value", "one text value"]),
        (_opt(value=42), ["dhcp.profiles[p1].options[0].value", "must be text"]),
        (_opt(encoding="hex", value="zz"), ["dhcp.profiles[p1].options[0].value", "hex"]),
        (
            _opt(encoding="sub-options", value="{url}"),
            ["dhcp.profiles[p1].options[0].value", "sub-code"],
        ),
        (
            _opt(encoding="sub-options", value={"0": "x"}),
            ["dhcp.profiles[p1].options[0].value", "1 to 254"],
        ),
        (
            _opt(encoding="sub-options", value={"one": "x"}),
            ["dhcp.profiles[p1].options[0].value", "'one'"],
        ),
        (_opt(speed=1), ["dhcp.profiles[p1].options[0]", "'speed'"]),
        (
            _with(options=[{"code": 66, "value": "{url}"}, {"code": 66, "value": "{host}"}]),
            ["dhcp.profiles[p1].options", "option 66 is given twice"],
        ),
        (_with(options=[{"code": 66}]), ["dhcp.profiles[p1].options[0].value", "missing"]),
    ],
)
def test_bad_profile_config_names_profile_key_and_fix(
    mapping: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ValueError) as exc:
        profile_from_mapping(mapping)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_site_profile_that_cannot_render_refuses_to_start() -> None:
    bad = _opt(code=150, encoding="ipv4-list", value="{host}")
    with pytest.raises(ValueError) as exc:
        table(bad)
    assert "dhcp.profiles[p1].option 150" in str(exc.value)
    assert "'imprint.example.net' is not an IPv4 address" in str(exc.value)


def test_sub_option_longer_than_255_is_refused() -> None:
    ep = ProvisioningEndpoint(
        "https", "h" * 60 + "." + "i" * 60 + "." + "j" * 60 + "." + "k" * 60 + ".net", 443, "/", ""
    )
    bad = _opt(code=43, encoding="sub-options", value={"1": "{url}"})
    with pytest.raises(ValueError, match="sub-option 1"):
        table(bad, endpoint=ep)


def test_builtin_option_that_does_not_fit_the_endpoint_is_left_out_with_a_warning() -> None:
    ep = ProvisioningEndpoint("https", "2001:db8::1", 443, "/provision", "")
    t = table(endpoint=ep)
    _, opts = options_for(b"MS-UC-Client", t=t)
    assert 120 not in opts and 43 in opts
    assert any("ms-uc-client" in w and "120" in w for w in t.warnings)


def test_vendor_class_with_trailing_nuls_still_matches() -> None:
    assert options_for(b"MS-UC-Client\x00")[0] == "ms-uc-client"
    assert options_for(b"yealink\x00\x00")[0] == "yealink"
