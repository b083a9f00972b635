"""parse_provisioning reads option bytes written by hand from the encodings in
/work/shared/design/protocols.md (and the RFCs it cites)."""

from __future__ import annotations

import pytest

from device_emulator.dhcp_codec import parse_provisioning
from device_emulator.provisioning import fingerprint_from_url, normalize_fingerprint

FP = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

# Option 43 for MS-UC-Client phones: 1-byte code, 1-byte length, ASCII value.
MS_UC_43 = (
    b"\x01\x0cMS-UC-Client\x02\x05https\x03\x13imprint.example.com\x04\x03443\x05\x0d/provisioning"
)
# Option 120 (RFC 3361 §3.1): encoding 0, then imprint.example.com in DNS label form.
SIP_120 = b"\x00\x07imprint\x07example\x03com\x00"


def test_ms_uc_client_43_and_120() -> None:
    info = parse_provisioning({43: MS_UC_43, 120: SIP_120}, "MS-UC-Client")
    assert info.url == "https://imprint.example.com:443/provisioning"
    assert (info.scheme, info.host, info.port, info.path) == (
        "https",
        "imprint.example.com",
        443,
        "/provisioning",
    )
    assert info.sip_servers == ("imprint.example.com",)
    assert info.vendor_profiles == ("ms-uc-client",)
    assert info.fingerprint is None
    assert info.problems == ()
    assert info.found


def test_ms_uc_client_fingerprint_in_suboption_6() -> None:
    sub6 = b"\x06\x47sha256:" + FP.encode()
    info = parse_provisioning({43: MS_UC_43 + sub6}, "MS-UC-Client")
    assert info.fingerprint == FP
    assert info.problems == ()


def test_ms_uc_client_wrong_suboption_1_is_reported() -> None:
    bad = b"\x01\x0cms-uc-client" + MS_UC_43[14:]
    info = parse_provisioning({43: bad}, "MS-UC-Client")
    assert info.url == "https://imprint.example.com:443/provisioning"
    assert any("sub-option 1" in p for p in info.problems)


def test_ms_uc_client_bad_port_and_truncated_suboption() -> None:
    bad_port = MS_UC_43.replace(b"\x04\x03443", b"\x04\x03abc")
    info = parse_provisioning({43: bad_port})
    assert info.url == "https://imprint.example.com/provisioning"
    assert any("port" in p for p in info.problems)
    truncated = MS_UC_43[:-3]  # sub-option 5 claims 13 octets, 10 remain
    info = parse_provisioning({43: truncated})
    assert info.url is None
    assert any("option 43" in p for p in info.problems)


def test_option_120_ipv4_form() -> None:
    info = parse_provisioning({120: b"\x01\xc0\x00\x02\x05"})
    assert info.sip_servers == ("192.0.2.5",)


def test_option_120_compression_pointer_refused() -> None:
    info = parse_provisioning({120: b"\x00\x07imprint\xc0\x01"})
    assert info.sip_servers == ()
    assert any("compression" in p for p in info.problems)


def test_sztp_143_length_prefixed_uris() -> None:
    # RFC 8572 §8.1: each URI preceded by a 2-octet length.
    value = b"\x00\x1ahttps://sztp.example.com/x\x00\x1ehttps://sztp2.example.com:8443"
    info = parse_provisioning({143: value})
    assert info.urls == ("https://sztp.example.com/x", "https://sztp2.example.com:8443")
    assert info.url == "https://sztp.example.com/x"
    assert info.vendor_profiles == ("sztp",)
    assert info.problems == ()


def test_sztp_143_plain_text_is_the_known_interop_bug() -> None:
    info = parse_provisioning({143: b"https://sztp.example.com/x"})
    assert info.url is None
    assert any("plain text" in p for p in info.problems)


def test_cisco_150_ipv4_list() -> None:
    info = parse_provisioning({150: b"\xc0\x00\x02\x01\xc0\x00\x02\x02"}, "Cisco Systems, Inc.")
    assert info.tftp_servers == ("192.0.2.1", "192.0.2.2")
    assert info.url is None and info.found
    assert info.vendor_profiles == ("cisco",)


def test_cisco_150_bad_length() -> None:
    info = parse_provisioning({150: b"\xc0\x00\x02\x01\xc0"})
    assert info.tftp_servers == ()
    assert any("multiple of 4" in p for p in info.problems)


def test_polycom_160_text_url_with_fragment_fingerprint() -> None:
    url = b"https://imprint.example.com/polycom/#sha256=" + FP.upper().encode()
    info = parse_provisioning({160: url}, "Polycom-VVX")
    assert info.url == url.decode()
    assert info.fingerprint == FP
    assert info.path == "/polycom/"


def test_polycom_prefers_160_yealink_prefers_66() -> None:
    options = {
        160: b"https://imprint.example.com/polycom/",
        66: b"http://imprint.example.com:8080/yealink/",
    }
    assert parse_provisioning(options, "Polycom-VVX").url == "https://imprint.example.com/polycom/"
    yealink = parse_provisioning(options, "yealink")
    assert yealink.url == "http://imprint.example.com:8080/yealink/"
    assert yealink.port == 8080
    assert set(yealink.urls) == {options[160].decode(), options[66].decode()}


def test_yealink_66_and_plain_43_url() -> None:
    info = parse_provisioning({43: b"https://imprint.example.com/y/"}, "yealink")
    assert info.url == "https://imprint.example.com/y/"
    assert info.vendor_profiles == ("vendor-url",)


def test_option_66_server_name_is_not_a_url() -> None:
    info = parse_provisioning({66: b"tftp.example.com"})
    assert info.url is None and info.tftp_servers == ("tftp.example.com",)


def test_onie_114_and_125() -> None:
    url = b"http://imprint.example.com/onie-installer"
    info = parse_provisioning({114: url}, "onie_vendor:x86_64-accton_as7712_32x-r0")
    assert info.url == url.decode() and info.vendor_profiles == ("onie",)
    # RFC 3925 §4: enterprise 42623 (0x0000a67f), data length, then sub-option 1 = URL.
    sub = b"\x01" + bytes([len(url)]) + url
    v125 = b"\x00\x00\xa6\x7f" + bytes([len(sub)]) + sub
    info = parse_provisioning({125: v125})
    assert info.url == url.decode()


def test_site_224_text_url() -> None:
    info = parse_provisioning({224: b"https://imprint.example.com/site"})
    assert info.url == "https://imprint.example.com/site"
    assert info.vendor_profiles == ("site-224",)


def test_trailing_nul_tolerated_but_reported() -> None:
    info = parse_provisioning({160: b"https://imprint.example.com/p\x00"})
    assert info.url == "https://imprint.example.com/p"
    assert any("NUL" in p for p in info.problems)


def test_nothing_useful() -> None:
    info = parse_provisioning({1: b"\xff\xff\xff\x00", 3: b"\x0a\x00\x00\x01"})
    assert not info.found and info.url is None and info.problems == ()


@pytest.mark.parametrize(
    "text",
    [
        FP,
        FP.upper(),
        "sha256:" + FP,
        "SHA-256=" + FP,
        ":".join(FP[i : i + 2] for i in range(0, 64, 2)),
    ],
)
def test_fingerprint_spellings(text: str) -> None:
    assert normalize_fingerprint(text) == FP


def test_fingerprint_rejects_wrong_length() -> None:
    assert normalize_fingerprint(FP[:-2]) is None
    assert normalize_fingerprint("sha256:xyz") is None


def test_fingerprint_from_url_query_and_fragment() -> None:
    assert fingerprint_from_url(f"https://h/p?fp={FP}") == FP
    assert fingerprint_from_url(f"https://h/p#sha256={FP}") == FP
    assert fingerprint_from_url("https://h/p#frag") is None
