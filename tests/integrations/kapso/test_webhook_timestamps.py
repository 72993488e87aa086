"""Lenient webhook timestamps: the ISO-first path reads exactly what the float-first one did."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.integrations.kapso.webhook_events import _datetime_from_text, to_aware_datetime


def _float_first(value: object) -> datetime | None:
    """The original parser (float() tried before ISO-8601 on every string): the reference."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            try:
                return datetime.fromtimestamp(float(text), tz=UTC)
            except ValueError:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _same(value: object) -> None:
    expected = _float_first(value)
    actual = to_aware_datetime(value)
    assert actual == expected
    # Equal instants may differ in offset; the parser must keep the one it was given.
    assert (actual.utcoffset() if actual else None) == (expected.utcoffset() if expected else None)


_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_datetimes = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31),
    timezones=st.one_of(st.none(), _offsets),
)


@st.composite
def _iso_texts(draw: st.DrawFn) -> str:
    moment = draw(_datetimes)
    text = moment.isoformat(
        sep=draw(st.sampled_from(["T", " "])),
        timespec=draw(st.sampled_from(["auto", "seconds", "milliseconds", "microseconds"])),
    )
    if draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    if draw(st.booleans()):
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " ", "\n"]))


_numberish = st.text(alphabet="0123456789-+.eE_: TZinfatyINFNA", max_size=24)


@given(_iso_texts())
def test_iso_texts_parse_as_before(text: str) -> None:
    _same(text)


@given(_numberish)
def test_number_like_texts_parse_as_before(text: str) -> None:
    _same(text)


@given(st.text(max_size=30))
def test_any_text_parses_as_before(text: str) -> None:
    _same(text)


@given(
    st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.integers(min_value=-(10**20), max_value=10**20).map(str)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**20), max_value=10**20)
    | _datetimes
    | st.none()
    | st.booleans()
)
def test_numbers_and_other_values_parse_as_before(value: object) -> None:
    _same(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T22:00:00Z", datetime(2026, 11, 25, 22, 0, tzinfo=UTC)),
        (" 2026-11-25T22:00:00.123+00:00 ", datetime(2026, 11, 25, 22, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-25 22:00:00", datetime(2026, 11, 25, 22, 0, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("1764108000", datetime(2025, 11, 25, 22, 0, tzinfo=UTC)),
        ("1764108000.5", datetime(2025, 11, 25, 22, 0, 0, 500000, tzinfo=UTC)),
        # Basic (digits-only) ISO dates stay Unix seconds, as before.
        ("20261125", datetime.fromtimestamp(20261125, tz=UTC)),
        ("2026-13-45T99:00:00Z", None),
        ("1e-5", datetime.fromtimestamp(1e-5, tz=UTC)),
        ("nan", None),
        ("yesterday-ish", None),
    ],
)
def test_common_shapes(value: str, expected: datetime | None) -> None:
    assert to_aware_datetime(value) == expected
    _same(value)


def test_repeated_texts_give_the_same_instant_and_the_cache_stays_bounded() -> None:
    first = to_aware_datetime("2026-11-25T22:00:00Z")
    assert to_aware_datetime("2026-11-25T22:00:00Z") == first
    assert to_aware_datetime(" 2026-11-25T22:00:00Z ") == first

    for second in range(5000):
        _same(str(1_764_108_000 + second))

    assert _datetime_from_text.cache_info().currsize <= 1024
