"""Compose one RGB frame per step: the step image letterboxed, captions burned in, or a text
slide when there is no image.

Text uses Roboto from the `font-roboto` package (Latin with accents, Greek, Cyrillic), never the
host's fonts, so the same job renders the same pixels everywhere. Without that package, Pillow's
bundled font (ASCII only) is used and accents are dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

BLACK = (0, 0, 0)
BACKGROUND = (22, 24, 31)
TEXT_COLOR = (255, 255, 255)
SECONDARY_COLOR = (214, 219, 229)
BAND_COLOR = (0, 0, 0, 170)  # about 2/3 opaque: legible over any image, image still visible
LINE_SPACING = 1.2
MIN_FONT_PX = 11

# For glyphs the font lacks: these keep common typography readable.
_ASCII_FALLBACK = {
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2022": "*", "\u00a0": " ", "\u2026": "...",
    "\u00ab": '"', "\u00bb": '"', "\u00d7": "x",
}


@lru_cache(maxsize=1)
def _font_file() -> str | None:
    try:
        import font_roboto  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = font_roboto.font_files.get("Roboto")
    return str(path) if path else None


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_file()
    return ImageFont.truetype(path, size=size) if path else ImageFont.load_default(size=size)


def _glyph_pixels(char: str) -> bytes:
    canvas = Image.new("L", (48, 48))
    ImageDraw.Draw(canvas).text((8, 8), char, font=font(24), fill=255)
    return canvas.tobytes()


@lru_cache(maxsize=1)
def _notdef_pixels() -> bytes:
    return _glyph_pixels("\uffff")  # a non-character: always drawn as the missing-glyph box


@lru_cache(maxsize=4096)
def _has_glyph(char: str) -> bool:
    if char.isspace() or char.isascii():
        return True
    return _glyph_pixels(char) != _notdef_pixels()


def displayable(text: str) -> str:
    """Text as the font can draw it: a missing accented glyph loses its accent (é -> e), common
    punctuation it lacks maps to ASCII. Other scripts stay as they are."""
    out: list[str] = []
    for char in text:
        if _has_glyph(char):
            out.append(char)
        elif char in _ASCII_FALLBACK:
            out.append(_ASCII_FALLBACK[char])
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base and all(_has_glyph(c) for c in base) else char)
    return "".join(out)


def base_font_size(width: int, height: int) -> int:
    # geometric mean keeps captions proportionate in landscape and portrait frames alike:
    # ~30 px at 1280x720, ~46 px at 1920x1080
    return max(MIN_FONT_PX, round((width * height) ** 0.5 * 0.032))


def wrap(text: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: int,
         max_lines: int) -> list[str]:
    """Greedy word wrap; words wider than a line are split; overflow ends in an ellipsis."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        words = paragraph.split()
        current = ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if face.getlength(candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            while face.getlength(word) > max_width and len(word) > 1:
                cut = _fit_prefix(word, face, max_width)
                lines.append(word[:cut])
                word = word[cut:]
            current = word
        if current:
            lines.append(current)
    if len(lines) > max_lines:
        kept = lines[:max_lines]
        kept[-1] = _ellipsize(kept[-1], face, max_width)
        return kept
    return lines


def _fit_prefix(word: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: int) -> int:
    low, high = 1, len(word)
    while low < high:
        mid = (low + high + 1) // 2
        if face.getlength(word[:mid]) <= max_width:
            low = mid
        else:
            high = mid - 1
    return low


def _ellipsize(line: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: int) -> str:
    while line and face.getlength(line + "...") > max_width:
        line = line[:-1]
    return line.rstrip() + "..."


@dataclass(frozen=True)
class TextBlock:
    lines: list[str]
    size: int
    color: tuple[int, int, int]
    bold: bool

    @property
    def line_height(self) -> int:
        return round(self.size * LINE_SPACING)

    @property
    def height(self) -> int:
        return self.line_height * len(self.lines)


def _blocks(title: str | None, text: str | None, title_size: int, text_size: int, max_width: int,
            max_height: int, gap: int, title_lines: int, text_lines: int) -> list[TextBlock]:
    """Title block then text block; the text gets the lines the height budget leaves."""
    blocks = []
    used = 0
    if title:
        allowed = max(1, min(title_lines, max_height // round(title_size * LINE_SPACING)))
        block = TextBlock(wrap(displayable(title), font(title_size), max_width, allowed), title_size,
                          TEXT_COLOR, True)
        if block.lines:
            blocks.append(block)
            used = block.height + gap
    if text:
        allowed = min(text_lines, (max_height - used) // round(text_size * LINE_SPACING))
        if allowed > 0:
            block = TextBlock(wrap(displayable(text), font(text_size), max_width, allowed), text_size,
                              SECONDARY_COLOR if title else TEXT_COLOR, False)
            if block.lines:
                blocks.append(block)
    return blocks


def _draw_blocks(draw: ImageDraw.ImageDraw, blocks: Iterable[TextBlock], top: int, width: int, gap: int) -> None:
    y = top
    for block in blocks:
        face = font(block.size)
        # the bundled face has no bold: drawing it again shifted right thickens the stems
        # (unlike a stroke, which fattens both sides and makes letters touch)
        shifts = range(max(1, block.size // 20) + 1) if block.bold else range(1)
        for line in block.lines:
            x = (width - face.getlength(line) - shifts[-1]) / 2
            for dx in shifts:
                draw.text((x + dx, y), line, font=face, fill=block.color)
            y += block.line_height
        y += gap


def letterbox(image: Image.Image, width: int, height: int) -> Image.Image:
    """Fit inside width x height keeping the aspect ratio; black bars fill the rest."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    if size != image.size:
        # bicubic: nearly Lanczos sharpness on UI text at 2/3 of its cost; reducing_gap lets
        # Pillow shrink big sources by an integer factor first (box filter), far cheaper
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if size == (width, height):
        return image.copy() if image.mode == "RGB" else image.convert("RGB")
    frame = Image.new("RGB", (width, height), BLACK)
    frame.paste(image, ((width - size[0]) // 2, (height - size[1]) // 2))
    return frame


def caption_band(frame: Image.Image, title: str | None, text: str | None) -> None:
    """Burn title and text into a semi-opaque band along the bottom of `frame` (in place)."""
    width, height = frame.size
    size = base_font_size(width, height)
    pad = max(4, round(size * 0.6))
    gap = round(size * 0.2)
    # the band never covers more than ~45% of the frame, so the image stays the main subject
    blocks = _blocks(title, text, round(size * 1.25), size, width - 4 * pad, int(height * 0.45) - 2 * pad,
                     gap, 2, 3)
    if not blocks:
        return
    band_height = sum(b.height for b in blocks) + gap * (len(blocks) - 1) + 2 * pad
    top = height - band_height
    draw = ImageDraw.Draw(frame, "RGBA")
    draw.rectangle((0, top, width, height), fill=BAND_COLOR)
    _draw_blocks(draw, blocks, top + pad, width, gap)


def text_slide(width: int, height: int, title: str | None, text: str | None, emphasis: float = 1.0) -> Image.Image:
    """A dark slide with title and text centred: steps without an image, and the title card."""
    frame = Image.new("RGB", (width, height), BACKGROUND)
    size = base_font_size(width, height)
    pad = round(size * 1.5)
    gap = round(size * 0.8)
    blocks = _blocks(title, text, round(size * 1.6 * emphasis), round(size * 1.05), width - 2 * pad,
                     height - 2 * pad, gap, 3, 8)
    if blocks:
        total = sum(b.height for b in blocks) + gap * (len(blocks) - 1)
        _draw_blocks(ImageDraw.Draw(frame), blocks, max(pad // 2, (height - total) // 2), width, gap)
    return frame


def compose(width: int, height: int, image: Image.Image | None, title: str | None, text: str | None,
            captions: bool, title_card: bool = False) -> Image.Image:
    """The frame for one step. Without an image the words are the slide's content, so they are
    drawn even when burned-in captions are off."""
    if image is None:
        return text_slide(width, height, title, text, emphasis=1.3 if title_card else 1.0)
    frame = letterbox(image, width, height)
    if captions:
        caption_band(frame, title, text)
    return frame
