"""QR codes for enrollment URIs: terminal, PNG and SVG (qrcode); photos read with zxing-cpp."""

from __future__ import annotations

import io
from pathlib import Path

import qrcode
import qrcode.image.svg
from PIL import Image, UnidentifiedImageError

from pairing.errors import PairingError


class UnreadableQR(PairingError):
    """No usable QR code could be read from an image."""


def _code(text: str) -> qrcode.QRCode:
    # Level M survives a little glare or a crease; qrcode picks alphanumeric mode by itself
    # when every character allows it (our URIs are built so that they do).
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    qr.add_data(text)
    qr.make(fit=True)
    return qr


def modules(text: str) -> int:
    """The side of the QR code in modules (33 for version 4, 41 for 6, ...)."""
    return int(_code(text).modules_count)


def terminal(text: str) -> str:
    """The QR code drawn with half-block characters, for a terminal."""
    out = io.StringIO()
    _code(text).print_ascii(out=out, invert=True)
    return out.getvalue()


def write_png(text: str, path: Path, *, box_size: int = 8) -> None:
    qr = _code(text)
    qr.box_size = box_size
    qr.make_image().save(str(path))


def write_svg(text: str, path: Path) -> None:
    image = _code(text).make_image(image_factory=qrcode.image.svg.SvgPathImage)
    image.save(str(path))


def read_image(path: Path) -> str:
    """The text of the QR code in a photo or screenshot, or :class:`UnreadableQR`."""
    import zxingcpp

    try:
        with Image.open(path) as img:
            img.load()
            codes = zxingcpp.read_barcodes(
                img.convert("L"), formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            )
    except FileNotFoundError:
        raise UnreadableQR(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadableQR(f"{path} is not an image this program can read: {exc}") from None
    texts = [code.text for code in codes if code.valid and code.text]
    if not texts:
        raise UnreadableQR(
            f"no readable QR code in {path}: take the photo closer, straight on, without glare"
        )
    if len(set(texts)) > 1:
        raise UnreadableQR(f"{path} holds {len(texts)} different QR codes; crop it to one")
    return texts[0]
