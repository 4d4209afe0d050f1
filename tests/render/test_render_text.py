"""Burned-in text: the font that ships with the service draws accented Latin, Greek and
Cyrillic as written."""

from __future__ import annotations

import pytest
from PIL import ImageChops

from shared.render.frames import displayable, font, text_slide

pytestmark = pytest.mark.usefixtures("no_sockets")


def test_the_shipped_font_is_used_and_keeps_accents() -> None:
    assert font(24).getname() == ("Roboto", "Regular")
    for text in ("Überblick", "Café crème", "Señal", "Ωμέγα", "Привет", "Zażółć gęślą jaźń"):
        assert displayable(text) == text


def test_an_accent_changes_the_drawn_caption() -> None:
    plain = text_slide(640, 360, "Resume", None)
    accented = text_slide(640, 360, "Résumé", None)
    assert ImageChops.difference(plain, accented).getbbox() is not None
