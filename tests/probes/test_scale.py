"""SCALE compact integers and headers, as chainHead_v1_header sends them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srd.probes.chain import Header, _compact, decode_compact, header_hash, scale_header
from srd.simulate.sandbox.substrate import FakeChain, FakeSubstrateNode


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),  # single-byte mode: value << 2
        (1, "04"),
        (63, "fc"),
        (64, "0101"),  # two-byte mode: (value << 2) | 0b01, little endian
        (16383, "fdff"),
        (16384, "02000100"),  # four-byte mode: (value << 2) | 0b10
        (2**30 - 1, "feffffff"),
        (2**30, "0300000040"),  # big-integer mode: ((len - 4) << 2) | 0b11, then the value
        (2**32 - 1, "03ffffffff"),
        (2**32, "070000000001"),
        (2**64 - 1, "13ffffffffffffffff"),
    ],
)
def test_compact_integers_in_all_four_modes(value: int, encoded: str) -> None:
    assert _compact(value).hex() == encoded
    assert decode_compact(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@given(st.integers(min_value=0, max_value=2**536 - 1), st.binary(max_size=8))
def test_compact_round_trips_and_reports_where_it_ends(value: int, rest: bytes) -> None:
    prefix = b"\xaa\xbb"
    data = prefix + _compact(value) + rest
    assert decode_compact(data, len(prefix)) == (value, len(data) - len(rest))


@pytest.mark.parametrize(
    "encoded",
    [
        "",  # nothing
        "01",  # two-byte mode, one byte
        "0200",  # four-byte mode, two bytes
        "03ffff",  # big-integer mode, truncated
        "0500",  # 1 in two-byte mode: not canonical
        "0300000000",  # 0 in big-integer mode: not canonical
    ],
)
def test_short_or_non_canonical_compacts_are_refused(encoded: str) -> None:
    with pytest.raises(ValueError, match="compact integer"):
        decode_compact(bytes.fromhex(encoded))


@pytest.mark.parametrize("number", [0, 1, 63, 64, 16384, 2**30 + 5])
def test_a_scale_header_gives_its_number_and_parent(number: int) -> None:
    raw = {
        "parentHash": "0x" + "11" * 32,
        "number": hex(number),
        "stateRoot": "0x" + "22" * 32,
        "extrinsicsRoot": "0x" + "33" * 32,
        "digest": {"logs": ["0x0661757261200100000000000000"]},
    }
    encoded = "0x" + scale_header(raw).hex()
    assert Header.from_scale(encoded, header_hash(raw)) == Header.from_rpc(raw)


def test_the_fake_node_header_encoding_hashes_to_the_block_hash() -> None:
    chain = FakeChain()
    for _ in range(70):  # past 63: the two-byte compact mode
        chain.produce()
    node = FakeSubstrateNode(chain)
    block = chain.best
    header = Header.from_scale("0x" + scale_header(node.header(block)).hex(), block.hash)
    assert header == Header(70, block.hash, block.parent_hash)


@pytest.mark.parametrize("bad", [None, "1234", "0x" + "00" * 32, "0xzz"])
def test_what_is_not_a_scale_header_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"SCALE header|non-hexadecimal"):
        Header.from_scale(bad, "0x00")
