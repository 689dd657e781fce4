"""Control characters: refused in values, spelled out in output a person reads.

A job's output, metrics and values are shown on the operator's terminal; a control
character there is obeyed rather than shown (ESC starts colour, cursor and window-title
sequences, CR overwrites the line, BEL rings). Values refuse them; output shows them the
way `cat -v` does (`^[` for ESC, `^M` for CR, `^?` for DEL, `M-^[` for the C1 CSI).
"""

from __future__ import annotations

import re

# C0 (with TAB, LF and CR), DEL and C1, as the body of a regex character class; written in
# the syntax Python's and Java's regexes read alike (the Rundeck export's option regexes).
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
_SHOWN_AS_IS = "\t\n"  # what output keeps: a terminal only moves the cursor on them
_TO_SPELL = re.compile(f"[{CONTROL_CHARACTERS}]")


def _caret(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHOWN_AS_IS:
        return char
    code = ord(char)
    if code == 0x7F:
        return "^?"
    if code >= 0x80:
        return "M-^" + chr(code - 0x80 + 0x40)
    return "^" + chr(code + 0x40)


def visible(text: str) -> str:
    """`text` with every control character but TAB and LF spelled out, as `cat -v` does."""
    return _TO_SPELL.sub(_caret, text)


def has_control_characters(text: str) -> bool:
    return _TO_SPELL.search(text) is not None
