"""Domain names as text and as labels, the forms the mDNS codec, records and responder share.

Pure, no dnslib. The text form escapes `.`, `\\` and bytes outside printable ASCII as `\\DDD`
(RFC 1035 §5.1 master-file style), so any label survives the round trip, and lower-casing the text
is exactly the ASCII-only case folding DNS names compare with (RFC 4343 §3; RFC 6762 §16).
"""

from __future__ import annotations

MAX_LABEL = 63  # RFC 1035 §2.3.4
MAX_NAME = 255  # RFC 1035 §2.3.4: wire length, length bytes and the root byte included

Labels = tuple[bytes, ...]

_PLAIN = frozenset(range(0x20, 0x7F)) - {0x2E, 0x5C}  # printable ASCII except "." and "\"


class NameSyntaxError(ValueError):
    """A name given by our own configuration cannot be a DNS name; the message says why."""


def label_text(label: bytes) -> str:
    """Return one label in escaped text form (no trailing dot)."""
    if all(b in _PLAIN for b in label):
        return label.decode("ascii")
    out: list[str] = []
    for b in label:
        if b in _PLAIN:
            out.append(chr(b))
        elif b in (0x2E, 0x5C):
            out.append("\\" + chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


def labels_to_text(labels: Labels) -> str:
    """Return the escaped, fully qualified text form (trailing dot; the root is ".")."""
    if not labels:
        return "."
    return ".".join(label_text(label) for label in labels) + "."


def text_to_labels(text: str) -> Labels:
    """Parse an escaped text name (trailing dot optional) into labels, or raise NameSyntaxError.

    Characters outside ASCII are taken as UTF-8 (RFC 6762 §16: mDNS names are UTF-8).
    """
    if text in ("", "."):
        return ()
    raw = text.encode("utf-8")
    labels: list[bytes] = []
    cur = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:  # backslash escape
            if i + 3 < n and raw[i + 1 : i + 4].isdigit():
                value = int(raw[i + 1 : i + 4])
                if value > 255:
                    raise NameSyntaxError(f"{text!r}: escape \\{value} is not a byte")
                cur.append(value)
                i += 4
                continue
            if i + 1 >= n:
                raise NameSyntaxError(f"{text!r} ends with a lone backslash")
            cur.append(raw[i + 1])
            i += 2
            continue
        if c == 0x2E:
            if not cur:
                raise NameSyntaxError(f"{text!r} has an empty label")
            labels.append(bytes(cur))
            cur = bytearray()
            i += 1
            continue
        cur.append(c)
        i += 1
    if cur:
        labels.append(bytes(cur))
    result = tuple(labels)
    check_labels(result, text)
    return result


def check_labels(labels: Labels, shown: str = "") -> None:
    """Raise NameSyntaxError if a label is empty or over 63 bytes, or the name over 255 bytes."""
    what = shown or labels_to_text(labels)
    for label in labels:
        if not label:
            raise NameSyntaxError(f"{what!r} has an empty label")
        if len(label) > MAX_LABEL:
            raise NameSyntaxError(
                f"{what!r}: label {label_text(label)!r} is {len(label)} bytes, "
                f"more than {MAX_LABEL} (RFC 1035 §2.3.4)"
            )
    if wire_length(labels) > MAX_NAME:
        raise NameSyntaxError(f"{what!r} is longer than {MAX_NAME} bytes on the wire")


def wire_length(labels: Labels) -> int:
    """Length of the uncompressed wire form, root byte included."""
    return sum(len(label) + 1 for label in labels) + 1


def wire_name(labels: Labels) -> bytes:
    """Uncompressed wire form of `labels`."""
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def canonical_wire_name(labels: Labels) -> bytes:
    """Uncompressed wire form with ASCII letters lower-cased: the form names are compared in."""
    return wire_name(tuple(label.lower() for label in labels))


def name_key(text: str) -> str:
    """Case-folded text form for comparing names (ASCII-only, as DNS does)."""
    # Non-ASCII bytes are always escaped as \DDD in our text form, so str.lower() only touches
    # ASCII letters here.
    return text.lower()
