"""Box labels people can read: on a filled background of the box's colour, in black or white by that colour's
brightness, kept inside the image — on infer's images and on diff's panels (a thin red label was lost on the demo's
striped scene)."""
from __future__ import annotations

import numpy as np

from fastdet_cli.det.draw import draw, label
from fastdet_cli.det.postprocess import Detections


def _striped(h: int = 200, w: int = 300) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, ::4] = 255  # one white column in four: what thin text disappears into
    return img


def _region(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    return img[y - h:y, x:x + w].reshape(-1, 3)


def test_label_sits_on_a_filled_box_with_contrasting_ink():
    for colour, ink in (((40, 40, 200), (255, 255, 255)), ((80, 230, 250), (0, 0, 0))):  # dark red, light yellow
        img = _striped()
        label(img, "triangle 0.51", 20, 60, colour, 0.5)
        px = _region(img, 21, 60, 60, 12)
        bg = np.all(px == colour, axis=1).mean()
        d_ink = np.abs(px.astype(int) - ink).sum(axis=1)
        d_bg = np.abs(px.astype(int) - colour).sum(axis=1)
        text = (d_ink < d_bg).mean()  # anti-aliased ink: nearer the ink than the background
        assert bg > 0.4 and text > 0.05, (colour, bg, text)  # the stripes are gone under the label


def test_label_stays_inside_the_image():
    img = _striped()
    label(img, "a long label at the corner", 290, 3, (40, 40, 200), 0.5)
    # moved left (the box spans columns 150-290, not just 290-299) and down (its lower rows are inside, not only
    # the three rows above y=3)
    assert np.all(img[0:14, 150:290] == (40, 40, 200), axis=2).mean() > 0.3
    assert np.all(img[8:12, 150:290] == (40, 40, 200), axis=2).mean() > 0.3


def test_draw_uses_the_filled_label():
    img = _striped()
    det = Detections(np.array([[30.0, 80.0, 120.0, 160.0]], np.float32), np.array([0.51], np.float32),
                     np.array([0]))
    out = draw(img, det, ["triangle"])
    above = out[62:80, 32:100].reshape(-1, 3)
    colours, counts = np.unique(above, axis=0, return_counts=True)
    fill = colours[counts.argmax()]
    assert counts.max() / len(above) > 0.4 and not np.array_equal(fill, [0, 0, 0]) \
        and not np.array_equal(fill, [255, 255, 255])
