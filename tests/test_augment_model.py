"""The learned affine augmentation of docs/design.md §3.2: table shapes and initial
values, the identity limits, the geometry of each parameter (also through the
x4 up/down-sampling path, in the released code's geometry and in the text's), the Gumbel
apply-mask frequency and the gradients to both logits."""
import math

import pytest
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

from custom_models.hyper_models import AugmentModel
from custom_transforms import affine

K = affine.NUM_PARAMETERS
# the paper's text in both items of the warp path (--paper-text geometry downsample)
TEXT = affine.Resampling(matrix_at_warp_size=True, consistent_grid=True, average_pool_back=True)
# the sampling grid alone as the text has it: what the identity resample was before
# the released grid became the default
CONSISTENT = affine.Resampling(consistent_grid=True)


def values_row(**named):
    """A (1, 7) values row with the named parameters set, the others 0."""
    values = torch.zeros(1, K)
    for name, value in named.items():
        values[0, affine.PARAMETERS.index(name)] = value
    return values


def gaussian_blob(side, centre_x, centre_y, sigma):
    y = torch.arange(side, dtype=torch.float64)[:, None]
    x = torch.arange(side, dtype=torch.float64)[None, :]
    blob = torch.exp(-((x - centre_x) ** 2 + (y - centre_y) ** 2) / (2 * sigma ** 2))
    return blob.float()[None, None]


def centre_of_mass(image):
    image = image[0, 0].double()
    y = torch.arange(image.shape[0], dtype=torch.float64)[:, None]
    x = torch.arange(image.shape[1], dtype=torch.float64)[None, :]
    mass = image.sum()
    return float((image * x).sum() / mass), float((image * y).sum() / mass)


def warp(image, values, resampling=None):
    """The warp at the size it is applied (x4 for images under 64 px), as augment() does it,
    by default on the consistent grid: the geometry tests measure the matrix, and the released
    grid's shrink about the centre is pinned on its own."""
    factor = affine.UPSAMPLE_FACTOR if min(image.shape[-2:]) < affine.UPSAMPLE_BELOW else 1
    side = image.shape[-1] * factor
    return affine.resample(image, affine.affine_matrices(values, side, side), resampling or CONSISTENT)


# ----------------------------------------------------------------------------- tables

def test_shared_model_has_two_times_seven_parameters():
    model = AugmentModel(500, "SHA")
    assert model.probability_logits.shape == (1, K) and model.magnitude_logits.shape == (1, K)
    assert sum(t.numel() for t in model.learned_tables().values()) == 2 * 7


def test_separate_model_has_two_times_seven_parameters_per_train_image():
    model = AugmentModel(500, "SEP")
    assert model.probability_logits.shape == (500, K) and model.magnitude_logits.shape == (500, K)
    assert sum(t.numel() for t in model.learned_tables().values()) == 2 * 7 * 500


@pytest.mark.parametrize("mode", ["SHA", "SEP"])
def test_initial_probability_is_a_fifth_and_magnitude_a_half(mode):
    model = AugmentModel(30, mode)
    assert torch.allclose(torch.sigmoid(model.probability_logits), torch.full_like(model.probability_logits, 0.2),
                          atol=1e-7, rtol=0)
    assert torch.equal(model.magnitude_logits, torch.zeros_like(model.magnitude_logits))
    assert torch.equal(torch.sigmoid(model.magnitude_logits), torch.full_like(model.magnitude_logits, 0.5))


def test_shared_rows_are_row_zero_for_every_index_and_separate_rows_are_the_indices():
    shared, separate = AugmentModel(30, "SHA"), AugmentModel(30, "SEP")
    indices = torch.tensor([29, 3, 17])
    assert shared.row_indices(indices).tolist() == [0]
    assert separate.row_indices(indices).tolist() == [29, 3, 17]
    separate.probability_logits[17, 2] = 5.0
    rows = separate.rows(indices, requires_grad=True)
    assert rows["probability_logits"].shape == (3, K) and rows["probability_logits"][2, 2] == 5.0
    assert all(row.is_leaf and row.requires_grad for row in rows.values())
    assert not any(row.requires_grad for row in separate.rows(indices).values())


def test_fixed_methods_are_not_augment_models():
    with pytest.raises(ValueError):
        AugmentModel(10, "RAND")


# ----------------------------------------------------------------------------- identity limits

def test_text_resample_without_matrix_is_bilinear_x4_up_then_average_pool_down():
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = F.avg_pool2d(F.interpolate(images, scale_factor=4, mode="bilinear", align_corners=False), 4)
    assert torch.equal(affine.resample(images, resampling=TEXT), expected)
    assert not torch.allclose(affine.resample(images, resampling=TEXT), images, atol=1e-3)  # it does blur a little


def test_consistent_grid_resample_without_matrix_is_bilinear_x4_up_then_bilinear_down():
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    up = F.interpolate(images, scale_factor=4, mode="bilinear", align_corners=False)
    expected = F.interpolate(up, size=(28, 28), mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(affine.resample(images, resampling=CONSISTENT), expected)


def kornia_0_4_1_identity(images):
    """The released code's identity resample, built from its recipe: bilinear x4 up
    (align_corners=False), grid_sample of the x4 image on the grid linspace(-1, 1, 4W) x
    linspace(-1, 1, 4H) with align_corners=False and border padding, bilinear back down."""
    height, width = images.shape[-2:]
    up = F.interpolate(images, size=(4 * height, 4 * width), mode="bilinear", align_corners=False)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 4 * height), torch.linspace(-1, 1, 4 * width),
                            indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(len(images), -1, -1, -1)
    warped = F.grid_sample(up, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.interpolate(warped, size=(height, width), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (4, 3, 32, 32), (5, 1, 8, 8), (2, 3, 20, 12)])
def test_resample_without_matrix_is_kornia_0_4_1s_shrunk_identity_by_default(shape):
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    released = affine.resample(images)
    assert (released - kornia_0_4_1_identity(images)).abs().max() < 1e-6
    # the shrink shows: the released identity is not the consistent grid's one
    assert (released - affine.resample(images, resampling=CONSISTENT)).abs().max() > 0.01


def ramp(side):
    """A 1 x 1 x side x side image whose value is the column index: bilinear sampling of it
    returns the (clamped) x coordinate it sampled at."""
    return torch.arange(side, dtype=torch.float32).expand(side, side)[None, None].contiguous()


def test_released_grid_samples_output_pixel_i_at_i_n_over_n_minus_1_minus_a_half():
    # 64 px: no x4 path, so the warp alone; the identity and a translation by t pixels
    side = 64
    columns = torch.arange(side, dtype=torch.float64)
    stretch = side / (side - 1)
    identity = affine.resample(ramp(side), torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))
    assert torch.allclose(identity[0, 0, 0].double(), (columns * stretch - 0.5).clamp(0, side - 1),
                          atol=1e-4)
    moved = affine.resample(ramp(side), torch.tensor([[[1.0, 0, 5.0], [0, 1.0, 0]]]))
    assert torch.allclose(moved[0, 0, 0].double(), ((columns - 5.0) * stretch - 0.5).clamp(0, side - 1),
                          atol=1e-4)
    consistent = affine.resample(ramp(side), torch.tensor([[[1.0, 0, 5.0], [0, 1.0, 0]]]),
                                 resampling=CONSISTENT)
    assert torch.allclose(consistent[0, 0, 0].double(), (columns - 5.0).clamp(0, side - 1), atol=1e-4)


def identity_kernel(resampling):
    """The identity resample of a single bright pixel, as a 3-tap kernel along x."""
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    out = affine.resample(image, resampling=resampling)[0, 0]
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-6)  # no mass lost away from the border
    row = out[4, 3:6] / out[4, 3:6].sum()
    return row.tolist(), out[3:6, 3:6]


def test_identity_resample_kernel_is_1_16_7_8_1_16_when_bilinear_and_1_8_3_4_1_8_in_the_text():
    # on the consistent grid: bilinear down samples the x4 image at 4i + 1.5, the mean of x4
    # pixels 4i + 1 and 4i + 2, which the bilinear x4 upsample made 1/8 x[i-1] + 7/8 x[i] and
    # 7/8 x[i] + 1/8 x[i+1]; avg_pool2d averages x4 pixels 4i..4i+3: weights (3/8 + 1/8)/4 =
    # 1/8 on each neighbour. (The released grid adds a shrink that varies across the image.)
    released, square = identity_kernel(CONSISTENT)
    assert released == pytest.approx([0.0625, 0.875, 0.0625], abs=1e-6)
    assert square[1, 1] == pytest.approx(0.875 ** 2, abs=1e-6)  # separable: the same per axis
    text, square = identity_kernel(affine.Resampling(consistent_grid=True, average_pool_back=True))
    assert text == pytest.approx([0.125, 0.75, 0.125], abs=1e-6)
    assert square[1, 1] == pytest.approx(0.75 ** 2, abs=1e-6)


def test_resample_leaves_images_of_64_pixels_and_more_untouched():
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(affine.resample(images), images)


# float32 round trip of pixel -> normalised -> pixel coordinates inside kornia: ~5e-5 on
# full-resolution noise, averaged down to a few 1e-6 by the x4 path
# (64 px, the released grid: the learned warp resamples even the identity matrix, shrunk, where
# the identity resample leaves such images alone, as the released code did)
@pytest.mark.parametrize("side, tolerance, resampling", [
    (8, 1e-5, affine.RELEASED), (28, 1e-5, affine.RELEASED), (8, 1e-5, CONSISTENT), (28, 1e-5, CONSISTENT),
    (64, 1e-4, CONSISTENT)])
def test_zero_values_give_the_identity_matrix_and_the_resampled_image(side, tolerance, resampling):
    images = torch.randn(4, 1, side, side, generator=torch.Generator().manual_seed(side))
    identity = affine.affine_matrices(torch.zeros(4, K), side * 4, side * 4)
    assert torch.equal(identity, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3))
    assert torch.allclose(warp(images, torch.zeros(4, K), resampling),
                          affine.resample(images, resampling=resampling), atol=tolerance, rtol=0)


@pytest.mark.parametrize("side", [8, 28])
def test_never_applied_parameters_give_exactly_the_resampled_identity(side):
    torch.manual_seed(0)
    images = torch.randn(16, 1, side, side)
    never = torch.full((16, K), -30.0)
    values = affine.sample_values(never, torch.full((16, K), 3.0), 16)
    assert torch.equal(values, torch.zeros(16, K))
    out = affine.augment(images, never, torch.full((16, K), 3.0))
    assert torch.allclose(out, affine.resample(images), atol=1e-5, rtol=0)


def test_zero_magnitude_gives_the_resampled_identity():
    torch.manual_seed(0)
    images = torch.randn(16, 1, 28, 28)
    always, zero_magnitude = torch.full((16, K), 30.0), torch.full((16, K), -30.0)
    assert affine.sample_values(always, zero_magnitude, 16).abs().max() < 1e-11
    out = affine.augment(images, always, zero_magnitude)
    assert torch.allclose(out, affine.resample(images), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- matrices

def apply_matrix(matrix, x, y):
    return (matrix[0] @ torch.tensor([x, y, 1.0])).tolist()


def test_matrix_translation_is_value_times_0_45_of_the_side():
    matrix = affine.affine_matrices(values_row(translate_x=0.5, translate_y=-0.2), 40, 100)
    assert torch.allclose(matrix[0], torch.tensor([[1.0, 0, 0.5 * 0.45 * 100], [0, 1.0, -0.2 * 0.45 * 40]]))


def test_matrix_rotation_and_scale_keep_the_image_centre_fixed():
    side = 112
    centre = (side - 1) / 2
    for named in ({"rotate": 0.7}, {"scale_x": -0.6, "scale_y": 0.9}, {"rotate": -1.0, "scale_x": 0.5}):
        matrix = affine.affine_matrices(values_row(**named), side, side)
        assert apply_matrix(matrix, centre, centre) == pytest.approx([centre, centre], abs=1e-4)
    rotation = affine.affine_matrices(values_row(rotate=1.0), side, side)[0, :, :2]
    angle = math.radians(30)
    assert torch.allclose(rotation, torch.tensor([[math.cos(angle), -math.sin(angle)],
                                                  [math.sin(angle), math.cos(angle)]]), atol=1e-6)
    scale = affine.affine_matrices(values_row(scale_x=1.0, scale_y=-1.0), side, side)[0, :, :2]
    assert torch.allclose(scale, torch.diag(torch.tensor([1.5, 0.5])), atol=1e-6)


def test_matrix_shear_is_about_the_origin():
    matrix = affine.affine_matrices(values_row(shear_x=1.0, shear_y=-0.5), 50, 50)
    assert torch.allclose(matrix[0], torch.tensor([[1.0, 0.3, 0], [-0.15, 1.0, 0]]), atol=1e-7)


def test_matrix_is_shear_after_translate_after_rotate_scale():
    """Shear . Translate . RotateScale: the shear acts on the translated point."""
    side = 60
    named = dict(rotate=0.4, translate_x=0.2, translate_y=0.3, shear_x=0.5, shear_y=-0.4, scale_x=0.3)
    matrix = affine.affine_matrices(values_row(**named), side, side)[0].double()
    centre = (side - 1) / 2
    angle = math.radians(30 * 0.4)
    sx = 1 + 0.3 * 0.5
    shift = torch.tensor([0.2 * 0.45 * side, 0.3 * 0.45 * side], dtype=torch.float64)
    shear = torch.tensor([[1, 0.5 * 0.3], [-0.4 * 0.3, 1]], dtype=torch.float64)
    rotate_scale = torch.tensor([[math.cos(angle) * sx, -math.sin(angle)],
                                 [math.sin(angle) * sx, math.cos(angle)]], dtype=torch.float64)
    for point in ([3.0, 7.0], [50.0, 12.0], [centre, centre]):
        p = torch.tensor(point, dtype=torch.float64)
        c = torch.tensor([centre, centre], dtype=torch.float64)
        expected = shear @ (rotate_scale @ (p - c) + c + shift)
        assert torch.allclose(matrix[:, :2] @ p + matrix[:, 2], expected, atol=1e-4)


# ----------------------------------------------------------------------------- geometry on images

@pytest.mark.parametrize("side", [8, 28, 64])
@pytest.mark.parametrize("value", [0.5, -0.3])
def test_translate_x_moves_centre_of_mass_right_by_value_times_0_45_of_the_side(side, value):
    centre = (side - 1) / 2
    image = gaussian_blob(side, centre, centre, sigma=max(side / 14, 0.8))
    before = centre_of_mass(affine.resample(image, resampling=CONSISTENT))
    after = centre_of_mass(warp(image, values_row(translate_x=value)))
    tolerance = 0.05 if side == 8 else 0.01 * side / 28
    assert after[0] - before[0] == pytest.approx(value * 0.45 * side, abs=tolerance)
    assert after[1] - before[1] == pytest.approx(0.0, abs=tolerance)


@pytest.mark.parametrize("side", [28, 64])
def test_translate_y_moves_centre_of_mass_down_by_value_times_0_45_of_the_side(side):
    centre = (side - 1) / 2
    image = gaussian_blob(side, centre, centre, sigma=side / 14)
    before = centre_of_mass(affine.resample(image, resampling=CONSISTENT))
    after = centre_of_mass(warp(image, values_row(translate_y=0.4)))
    assert after[1] - before[1] == pytest.approx(0.4 * 0.45 * side, abs=0.01 * side / 28)
    assert after[0] - before[0] == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("side", [8, 28])
def test_augment_translation_is_a_quarter_of_the_range_by_default_and_the_range_in_the_text(
        side, monkeypatch):
    """The released code builds the matrix for the original size and applies it to the x4
    image: a translation moves value * 0.45 * side / 4 pixels of the original image (MNIST,
    value 0.5: 1.575 px); the text's matrix moves the full value * 0.45 * side (6.3 px)."""
    value = 0.5
    monkeypatch.setattr(affine, "sample_values", lambda p, m, batch: values_row(translate_x=value))
    centre = (side - 1) / 2
    image = gaussian_blob(side, centre, centre, sigma=max(side / 14, 0.8))
    before = centre_of_mass(affine.resample(image))
    released = centre_of_mass(affine.augment(image, torch.zeros(1, K), torch.zeros(1, K)))
    assert released[0] - before[0] == pytest.approx({8: 0.45, 28: 1.575}[side], abs=0.05)
    assert released[1] - before[1] == pytest.approx(0.0, abs=0.01)
    before = centre_of_mass(affine.resample(image, resampling=TEXT))
    text = centre_of_mass(affine.augment(image, torch.zeros(1, K), torch.zeros(1, K), TEXT))
    assert text[0] - before[0] == pytest.approx({8: 1.8, 28: 6.3}[side], abs=0.05)


@pytest.mark.parametrize("resampling, blob, expected", [
    # released: about (W/2, H/2) = (14, 14) of the original 28 px frame, in x4 pixels; a blob
    # 26 px right of it turns 30 degrees: (14 + 26 cos 30, 14 + 26 sin 30)
    (affine.RELEASED, (40.0, 14.0), (36.5167, 27.0)),
    # text: about the x4 image's centre (55.5, 55.5); 30 px right: (55.5 + 30 cos 30, 55.5 + 15)
    (TEXT, (85.5, 55.5), (81.4808, 70.5))])
def test_x4_warp_rotates_about_the_original_frames_centre_by_default_and_the_x4_centre_in_the_text(
        resampling, blob, expected):
    matrices = affine.warp_matrices(values_row(rotate=1.0), 28, 28, resampling)
    image = gaussian_blob(112, *blob, sigma=2.0)
    warped = warp_affine(image, matrices, dsize=(112, 112), mode="bilinear", padding_mode="border",
                         align_corners=True)
    assert centre_of_mass(warped) == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("side", [28, 64])
@pytest.mark.parametrize("value", [1.0, -0.5])
def test_rotation_turns_an_off_centre_blob_by_30_degrees_times_value_about_the_centre(side, value):
    centre, radius = (side - 1) / 2, side / 4
    image = gaussian_blob(side, centre + radius, centre, sigma=side / 14)
    before = centre_of_mass(affine.resample(image, resampling=CONSISTENT))
    after = centre_of_mass(warp(image, values_row(rotate=value)))
    angle_before = math.degrees(math.atan2(before[1] - centre, before[0] - centre))
    angle_after = math.degrees(math.atan2(after[1] - centre, after[0] - centre))
    # positive angles turn +x towards +y, i.e. clockwise on screen (rows grow downwards)
    assert angle_after - angle_before == pytest.approx(30.0 * value, abs=0.2)
    assert math.hypot(after[0] - centre, after[1] - centre) == pytest.approx(
        math.hypot(before[0] - centre, before[1] - centre), abs=0.05 * side / 28)


@pytest.mark.parametrize("side", [28, 64])
def test_shear_x_shifts_by_0_3_value_times_row_about_the_origin(side):
    """Shear about pixel (0, 0) of the image it is applied to: at x4 that origin is
    the centre of the up-sampled first pixel, -3/8 of a pixel from the original's."""
    centre = (side - 1) / 2
    image = gaussian_blob(side, centre, centre + 0.15 * side, sigma=side / 14)
    before = centre_of_mass(affine.resample(image, resampling=CONSISTENT))
    after = centre_of_mass(warp(image, values_row(shear_x=1.0)))
    origin = -0.375 if side < 64 else 0.0
    assert after[0] - before[0] == pytest.approx(0.3 * (before[1] - origin), abs=0.01 * side / 28)
    assert after[1] - before[1] == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("side", [28, 64])
def test_scale_stretches_distance_to_the_centre_by_one_plus_half_value(side):
    centre = (side - 1) / 2
    image = gaussian_blob(side, centre - 0.12 * side, centre + 0.12 * side, sigma=side / 20)
    before = centre_of_mass(affine.resample(image, resampling=CONSISTENT))
    after = centre_of_mass(warp(image, values_row(scale_x=-0.8, scale_y=1.0)))
    assert after[0] - centre == pytest.approx(0.6 * (before[0] - centre), abs=0.02 * side / 28)
    assert after[1] - centre == pytest.approx(1.5 * (before[1] - centre), abs=0.02 * side / 28)


# ----------------------------------------------------------------------------- sampling

def test_gumbel_apply_mask_frequency_matches_sigmoid_of_probability_logit():
    torch.manual_seed(0)
    samples = 20000
    probability_logits = torch.tensor([[-3.0, -1.0, math.log(0.2 / 0.8), 0.0, 0.7, 2.0, 4.0]])
    values = affine.sample_values(probability_logits, torch.full((1, K), 5.0), samples)
    assert values.shape == (samples, K)
    applied = (values != 0).double().mean(0)
    expected = torch.sigmoid(probability_logits[0]).double()
    tolerance = 4.5 * torch.sqrt(expected * (1 - expected) / samples)  # binomial, 4.5 sigma
    assert ((applied - expected).abs() <= tolerance).all(), (applied, expected)


def test_applied_magnitude_is_signed_gaussian_scaled_by_sigmoid_of_magnitude_logit():
    torch.manual_seed(1)
    samples = 20000
    magnitude_logits = torch.tensor([[-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0]])
    values = affine.sample_values(torch.full((1, K), 30.0), magnitude_logits, samples)
    scale = torch.sigmoid(magnitude_logits[0])
    standardised = values / scale
    assert standardised.mean(0).abs().max() < 4.5 / math.sqrt(samples)
    assert (standardised.std(0) - 1).abs().max() < 0.03
    assert ((values > 0).double().mean(0) - 0.5).abs().max() < 0.02  # signed, both ways


def test_separate_rows_sample_independently_per_image():
    torch.manual_seed(2)
    probability = torch.full((2000, K), -30.0)
    probability[1::2] = 30.0  # odd images always, even images never
    values = affine.sample_values(probability, torch.zeros(2000, K), 2000)
    assert torch.equal(values[0::2], torch.zeros(1000, K))
    assert bool((values[1::2] != 0).all())


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("side", [8, 28])
def test_warped_image_loss_sends_finite_nonzero_gradients_to_both_logits(side):
    model = AugmentModel(64, "SEP")
    with torch.no_grad():
        model.probability_logits.fill_(0.5)
    generator = torch.Generator().manual_seed(side)
    images = torch.randn(16, 1, side, side, generator=generator)
    target = torch.randn(16, 1, side, side, generator=generator)
    indices = torch.arange(0, 64, 4)
    rows = model.rows(indices, requires_grad=True)

    torch.manual_seed(3)
    expected_values = affine.sample_values(rows["probability_logits"].detach(),
                                           rows["magnitude_logits"].detach(), 16)
    torch.manual_seed(3)
    warped = model.augment(images, rows)
    ((warped - target) ** 2).sum().backward()

    probability_grad = rows["probability_logits"].grad
    magnitude_grad = rows["magnitude_logits"].grad
    assert torch.isfinite(probability_grad).all() and torch.isfinite(magnitude_grad).all()
    applied = expected_values != 0
    assert 0 < int(applied.sum()) < applied.numel()
    # straight-through: the apply logits get a gradient whether or not a parameter was drawn
    assert bool((probability_grad != 0).all())
    # the magnitude only matters where the parameter was applied
    assert torch.equal(magnitude_grad != 0, applied)
