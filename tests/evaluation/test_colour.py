"""`delta_e_2000` on Sharma, Wu and Dalal's CIEDE2000 test data (2005, Table 1: 34 Lab pairs with their ΔE00),
through the function's own path: each pair made sRGB in [0, 1] (the pairs whose Lab lies inside the sRGB
gamut, so the colour is exactly representable), given as images, compared with the published ΔE00."""

import numpy as np
import pytest
import torch

from vaetrain.evaluation.colour import delta_e_2000

# (L1, a1, b1, L2, a2, b2, ΔE00), in the paper's order.
SHARMA_2005 = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]
# The published values have 4 decimals; float64 sRGB carries the Lab values to ~1e-10.
TOLERANCE = 1e-4
# Pair 10 lies exactly on the mean-hue discontinuity (hue difference 180°): any rounding of its colours picks a
# side, and pairs 9 and 11 give both sides' values. Through sRGB it reads as pair 11.
EITHER_SIDE = {10: 7.2195}


def in_gamut_pairs() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(first colours, second colours) as (N, 3, 1, 1) sRGB images in [0, 1] (float64), the published ΔE00 and
    the pairs' numbers, for the pairs whose two colours sRGB holds (lab2rgb clips the others: another colour)."""
    from skimage.color import lab2rgb, rgb2lab

    data = np.array(SHARMA_2005)
    labs = data[:, :6].reshape(-1, 2, 3)
    rgbs = lab2rgb(labs)
    inside = np.abs(rgb2lab(rgbs) - labs).max(axis=(1, 2)) < 1e-6
    images = torch.from_numpy(rgbs[inside]).permute(1, 0, 2)[..., None, None]  # (2, N, 3, 1, 1)
    return images[0], images[1], data[inside, 6], np.flatnonzero(inside) + 1


def errors(values: np.ndarray, published: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    other = np.array([EITHER_SIDE.get(n, v) for n, v in zip(numbers, published)])
    return np.minimum(np.abs(values - published), np.abs(values - other))


def test_delta_e_2000_gives_sharmas_values_through_its_rgb_path():
    first, second, published, numbers = in_gamut_pairs()
    assert len(published) == 27  # pairs 1-6 (saturated blue at L 50) and 28 (a saturated green) lie outside sRGB
    values = delta_e_2000(first, second).numpy()
    assert errors(values, published, numbers).max() < TOLERANCE
    assert errors(delta_e_2000(second, first).numpy(), published, numbers).max() < TOLERANCE  # CIEDE2000 is symmetric
    whole = delta_e_2000(first.permute(2, 1, 0, 3).reshape(1, 3, 3, 9), second.permute(2, 1, 0, 3).reshape(1, 3, 3, 9))
    assert whole.item() == pytest.approx(values.mean(), abs=1e-9)  # one image of all the pairs: the mean over its pixels


def test_sharmas_pairs_tell_ciede2000_from_simpler_formulas():
    """The data catch the wrong formula or the wrong colour space: CIE76, CIE94, channels in BGR order."""
    from skimage.color import deltaE_cie76, deltaE_ciede94, deltaE_ciede2000, rgb2lab

    first, second, published, numbers = in_gamut_pairs()
    a, b = (rgb2lab(x[..., 0, 0].numpy()) for x in (first, second))
    assert errors(deltaE_cie76(a, b), published, numbers).max() > 100 * TOLERANCE
    assert errors(deltaE_ciede94(a, b), published, numbers).max() > 100 * TOLERANCE
    bgr = [rgb2lab(x[..., 0, 0].numpy()[:, ::-1]) for x in (first, second)]
    assert errors(deltaE_ciede2000(*bgr), published, numbers).max() > 100 * TOLERANCE
