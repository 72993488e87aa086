"""Turning an assistant's Markdown into WhatsApp text, in pieces WhatsApp accepts."""

from __future__ import annotations

import re

from app.integrations.kapso.limits import TEXT_BODY_MAX

_CODE_BLOCK = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_LINK = re.compile(r"\[([^\]\n]+)\]\((\S+?)\)")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\((\S+?)\)")
_BULLET = re.compile(r"^(\s*)[*+-]\s+", re.MULTILINE)
_HRULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")

# Private-use placeholders keep converted bold text away from the italic pass.
_BOLD_OPEN, _BOLD_CLOSE = "\ue000", "\ue001"
_CODE_OPEN, _CODE_CLOSE = "\ue002", "\ue003"


def markdown_to_whatsapp(text: str) -> str:
    """Convert common Markdown to WhatsApp's formatting (`*bold*`, `_italic_`, `~strike~`)."""
    code_spans: list[str] = []

    def keep_code(match: re.Match[str]) -> str:
        # Code is shown monospaced and never reformatted.
        code_spans.append(match.group(1).strip("\n"))
        return f"{_CODE_OPEN}{len(code_spans) - 1}{_CODE_CLOSE}"

    result = _CODE_BLOCK.sub(keep_code, text)
    result = _INLINE_CODE.sub(keep_code, result)
    result = _IMAGE.sub(
        lambda m: f"{m.group(1)}: {m.group(2)}" if m.group(1) else m.group(2), result
    )
    result = _LINK.sub(_link, result)
    result = _HRULE.sub("", result)
    result = _HEADING.sub(lambda m: f"{_BOLD_OPEN}{m.group(1)}{_BOLD_CLOSE}", result)
    result = _BULLET.sub(lambda m: f"{m.group(1)}• ", result)
    result = _BOLD.sub(lambda m: f"{_BOLD_OPEN}{m.group(2)}{_BOLD_CLOSE}", result)
    result = _ITALIC_STAR.sub(lambda m: f"_{m.group(1)}_", result)
    result = _STRIKE.sub(lambda m: f"~{m.group(1)}~", result)
    result = result.replace(_BOLD_OPEN, "*").replace(_BOLD_CLOSE, "*")
    for index, code in enumerate(code_spans):
        result = result.replace(f"{_CODE_OPEN}{index}{_CODE_CLOSE}", f"```{code}```")
    return _BLANK_RUNS.sub("\n\n", result).strip()


def _link(match: re.Match[str]) -> str:
    label, url = match.group(1), match.group(2)
    # WhatsApp has no link markup: show the URL itself, after the label when they differ.
    return url if label.strip() == url else f"{label} ({url})"


def split_message(text: str, limit: int = TEXT_BODY_MAX) -> list[str]:
    """Split text into pieces of at most `limit` code points.

    Cuts at paragraph breaks first, then line breaks, then sentence ends, then spaces,
    and only as a last resort inside a word.
    """
    text = text.strip()
    if not text:
        return []
    pieces: list[str] = []
    while len(text) > limit:
        cut = _best_cut(text, limit)
        head, text = text[:cut].rstrip(), text[cut:].lstrip()
        if head:
            pieces.append(head)
    if text:
        pieces.append(text)
    return pieces


def _best_cut(text: str, limit: int) -> int:
    window = text[: limit + 1]
    for separator in ("\n\n", "\n"):
        index = window.rfind(separator, 1, limit + 1)
        if index != -1:
            return index
    # Within a paragraph, avoid a cut that leaves a tiny first piece.
    floor = limit // 4
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(window) if floor <= m.end() <= limit]
    if sentence_ends:
        return sentence_ends[-1]
    space = window.rfind(" ", floor, limit + 1)
    if space != -1:
        return space
    return limit


def format_reply(markdown: str, limit: int = TEXT_BODY_MAX) -> list[str]:
    """An assistant reply as the WhatsApp messages to send, in order."""
    return split_message(markdown_to_whatsapp(markdown), limit)
