"""A small bitmap font for captions in PNG grids: hand-made 5x7 glyphs (with one descender row) for printable ASCII,
drawn with NumPy and scaled by an integer factor, and word wrapping to a width in characters.

Each glyph is 8 rows of 5 pixels, one hex byte a row, bit 4 the leftmost pixel; rows 0-6 reach from the cap height to
the baseline, row 7 holds descenders. A character outside the font draws as '?'.
"""

from __future__ import annotations

import numpy as np

GLYPH_WIDTH, GLYPH_HEIGHT = 5, 8
ADVANCE = GLYPH_WIDTH + 1  # a blank column after each glyph
ELLIPSIS = "\u2026"

GLYPHS = {
    " ": "00 00 00 00 00 00 00 00", "!": "04 04 04 04 04 00 04 00", '"': "0a 0a 00 00 00 00 00 00",
    "#": "0a 0a 1f 0a 1f 0a 0a 00", "$": "04 0f 14 0e 05 1e 04 00", "%": "18 19 02 04 08 13 03 00",
    "&": "0c 12 14 08 15 12 0d 00", "'": "04 04 00 00 00 00 00 00", "(": "02 04 08 08 08 04 02 00",
    ")": "08 04 02 02 02 04 08 00", "*": "00 04 15 0e 15 04 00 00", "+": "00 04 04 1f 04 04 00 00",
    ",": "00 00 00 00 00 04 04 08", "-": "00 00 00 1f 00 00 00 00", ".": "00 00 00 00 00 00 04 00",
    "/": "00 01 02 04 08 10 00 00", "0": "0e 11 13 15 19 11 0e 00", "1": "04 0c 04 04 04 04 0e 00",
    "2": "0e 11 01 02 04 08 1f 00", "3": "1f 02 04 02 01 11 0e 00", "4": "02 06 0a 12 1f 02 02 00",
    "5": "1f 10 1e 01 01 11 0e 00", "6": "06 08 10 1e 11 11 0e 00", "7": "1f 01 02 04 08 08 08 00",
    "8": "0e 11 11 0e 11 11 0e 00", "9": "0e 11 11 0f 01 02 0c 00", ":": "00 00 04 00 00 04 00 00",
    ";": "00 00 04 00 00 04 04 08", "<": "02 04 08 10 08 04 02 00", "=": "00 00 1f 00 1f 00 00 00",
    ">": "08 04 02 01 02 04 08 00", "?": "0e 11 01 02 04 00 04 00", "@": "0e 11 01 0d 15 15 0e 00",
    "A": "0e 11 11 1f 11 11 11 00", "B": "1e 11 11 1e 11 11 1e 00", "C": "0e 11 10 10 10 11 0e 00",
    "D": "1c 12 11 11 11 12 1c 00", "E": "1f 10 10 1e 10 10 1f 00", "F": "1f 10 10 1e 10 10 10 00",
    "G": "0e 11 10 17 11 11 0f 00", "H": "11 11 11 1f 11 11 11 00", "I": "0e 04 04 04 04 04 0e 00",
    "J": "07 02 02 02 02 12 0c 00", "K": "11 12 14 18 14 12 11 00", "L": "10 10 10 10 10 10 1f 00",
    "M": "11 1b 15 15 11 11 11 00", "N": "11 11 19 15 13 11 11 00", "O": "0e 11 11 11 11 11 0e 00",
    "P": "1e 11 11 1e 10 10 10 00", "Q": "0e 11 11 11 15 12 0d 00", "R": "1e 11 11 1e 14 12 11 00",
    "S": "0f 10 10 0e 01 01 1e 00", "T": "1f 04 04 04 04 04 04 00", "U": "11 11 11 11 11 11 0e 00",
    "V": "11 11 11 11 11 0a 04 00", "W": "11 11 11 15 15 15 0a 00", "X": "11 11 0a 04 0a 11 11 00",
    "Y": "11 11 11 0a 04 04 04 00", "Z": "1f 01 02 04 08 10 1f 00", "[": "0e 08 08 08 08 08 0e 00",
    "\\": "00 10 08 04 02 01 00 00", "]": "0e 02 02 02 02 02 0e 00", "^": "04 0a 11 00 00 00 00 00",
    "_": "00 00 00 00 00 00 00 1f", "`": "08 04 00 00 00 00 00 00", "a": "00 00 0e 01 0f 11 0f 00",
    "b": "10 10 16 19 11 11 1e 00", "c": "00 00 0e 10 10 11 0e 00", "d": "01 01 0d 13 11 11 0f 00",
    "e": "00 00 0e 11 1f 10 0e 00", "f": "06 09 08 1c 08 08 08 00", "g": "00 00 0f 11 11 0f 01 0e",
    "h": "10 10 16 19 11 11 11 00", "i": "04 00 0c 04 04 04 0e 00", "j": "02 00 06 02 02 02 12 0c",
    "k": "10 10 12 14 18 14 12 00", "l": "0c 04 04 04 04 04 0e 00", "m": "00 00 1a 15 15 11 11 00",
    "n": "00 00 16 19 11 11 11 00", "o": "00 00 0e 11 11 11 0e 00", "p": "00 00 1e 11 11 1e 10 10",
    "q": "00 00 0f 11 11 0f 01 01", "r": "00 00 16 19 10 10 10 00", "s": "00 00 0e 10 0e 01 1e 00",
    "t": "08 08 1c 08 08 09 06 00", "u": "00 00 11 11 11 13 0d 00", "v": "00 00 11 11 11 0a 04 00",
    "w": "00 00 11 11 15 15 0a 00", "x": "00 00 11 0a 04 0a 11 00", "y": "00 00 11 11 11 0f 01 0e",
    "z": "00 00 1f 02 04 08 1f 00", "{": "02 04 04 08 04 04 02 00", "|": "04 04 04 04 04 04 04 00",
    "}": "08 04 04 02 04 04 08 00", "~": "00 00 08 15 02 00 00 00", ELLIPSIS: "00 00 00 00 00 00 15 00",
}


def glyph(char: str) -> np.ndarray:
    """The [GLYPH_HEIGHT, GLYPH_WIDTH] bool bitmap of one character ('?' for one outside the font)."""
    rows = np.frombuffer(bytes.fromhex(GLYPHS.get(char, GLYPHS["?"])), np.uint8)
    bits = 1 << np.arange(GLYPH_WIDTH - 1, -1, -1)
    return (rows[:, None] & bits) > 0


def render(text: str, scale: int = 1) -> np.ndarray:
    """[GLYPH_HEIGHT * scale, len(text) * ADVANCE * scale] bool pixels of one line, True where ink is."""
    cells = [np.pad(glyph(char), ((0, 0), (0, ADVANCE - GLYPH_WIDTH))) for char in text]
    line = np.concatenate(cells, axis=1) if cells else np.zeros((GLYPH_HEIGHT, 0), bool)
    return line.repeat(scale, axis=0).repeat(scale, axis=1)


def wrap(text: str, width: int, max_lines: int = 2) -> list[str]:
    """The words of text in lines of at most width characters, a word longer than a line cut; when they need more
    than max_lines, the last line kept ends with an ellipsis."""
    lines = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.extend(word[start:start + width] for start in range(0, len(word), width))
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1][:width - 1] + ELLIPSIS]
    return lines or [""]
