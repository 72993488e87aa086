"""Markdown becomes WhatsApp formatting; long replies split at natural boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.services.whatsapp.formatting import format_reply, markdown_to_whatsapp, split_message


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**IVA** a pagar", "*IVA* a pagar"),
        ("__IVA__ a pagar", "*IVA* a pagar"),
        ("Es *importante*", "Es _importante_"),
        ("**negrita** y *cursiva*", "*negrita* y _cursiva_"),
        ("~~tachado~~", "~tachado~"),
        ("## Resumen\nTexto", "*Resumen*\nTexto"),
        ("- uno\n- dos\n* tres", "• uno\n• dos\n• tres"),
        ("Ver [Fizko](https://fizko.ai)", "Ver Fizko (https://fizko.ai)"),
        ("[https://fizko.ai](https://fizko.ai)", "https://fizko.ai"),
        ("Usa `F29` hoy", "Usa ```F29``` hoy"),
        ("```\ncodigo **no**\n```", "```codigo **no**```"),
        ("a\n\n\n\nb", "a\n\nb"),
        ("2 * 3 * 4", "2 * 3 * 4"),
        ("precio*cantidad", "precio*cantidad"),
        ("texto plano", "texto plano"),
        ("Uno\n\n---\n\nDos", "Uno\n\nDos"),
    ],
)
def test_markdown_to_whatsapp(markdown: str, whatsapp: str) -> None:
    assert markdown_to_whatsapp(markdown) == whatsapp


def test_short_text_is_one_piece() -> None:
    assert split_message("Hola") == ["Hola"]
    assert split_message("   ") == []


def test_splits_at_paragraphs_first() -> None:
    first = "a" * 3000
    second = "b" * 3000
    assert split_message(f"{first}\n\n{second}") == [first, second]


def test_splits_at_sentences_when_no_paragraph_fits() -> None:
    sentence = "Esta es una oración sobre el IVA. "
    text = sentence * 200  # ~6800 characters, no newlines
    pieces = split_message(text)
    assert len(pieces) == 2
    assert all(len(p) <= 4096 for p in pieces)
    assert pieces[0].endswith(".")
    assert " ".join(pieces) == text.strip()


def test_a_single_huge_word_is_cut_hard() -> None:
    pieces = split_message("x" * 9000)
    assert [len(p) for p in pieces] == [4096, 4096, 808]


def test_limit_counts_code_points() -> None:
    pieces = split_message("😀" * 4096)
    assert pieces == ["😀" * 4096]


def test_format_reply_converts_then_splits() -> None:
    reply = format_reply("**Hola**\n\n" + "c" * 5000)
    assert reply[0] == "*Hola*"
    assert all(len(piece) <= 4096 for piece in reply)


@given(st.text(min_size=0, max_size=12000))
def test_split_never_exceeds_the_limit_and_loses_only_whitespace(text: str) -> None:
    pieces = split_message(text, limit=500)
    assert all(0 < len(piece) <= 500 for piece in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
