import pytest
import torch

import lineguard
from lineguard.errors import ParameterError
from lineguard.features.lighting import match_lighting
from lineguard.metrics import image_auroc
from lineguard.scoring.image import reweight
from tests.conftest import SIZE

FEW_VIEWS = dict(rotation_views=2, translation_views=1)  # keeps the support small on 2 CPU cores


def peaks_on_defects(maps, labels, masks) -> bool:
    near = torch.nn.functional.max_pool2d(masks[:, None].float(), 17, 1, 8)[:, 0]
    peaks = maps.flatten(1).argmax(1)
    return all(near[i].flatten()[peaks[i]] > 0 for i in torch.nonzero(labels).flatten())


@pytest.mark.slow
@pytest.mark.parametrize("shots", [1, 4])
def test_finds_planted_defects_with_few_support_images(parts, shots):
    support, test, labels, masks = parts
    detector = lineguard.create("fewshot", image_size=SIZE, **FEW_VIEWS).fit(support[:shots])
    result = detector.predict(test)
    assert result.maps.shape == (len(test), SIZE, SIZE)
    assert image_auroc(labels, result.scores) >= 0.9
    assert peaks_on_defects(result.maps, labels, masks)


def test_bank_holds_the_augmented_views_after_the_coreset(parts):
    support = parts[0][:2]
    detector = lineguard.create("fewshot", image_size=64, weights="random", coreset_ratio=0.5, hflip=True,
                                vflip=False, rotation_views=1, max_angle=10.0, brightness_views=0, seed=3).fit(support)
    views = detector.augmentations().views_per_image
    assert views == 3
    patches = 2 * views * (64 // 8) ** 2  # stride-8 grid of a 64 px image
    assert detector.memory_bank_.shape[0] == patches // 2
    again = lineguard.create("fewshot", **detector.get_params())
    again.extractor.backbone.load_state_dict(detector.extractor.backbone.state_dict())  # same random weights
    again.fit(support)
    assert torch.equal(again.memory_bank_, detector.memory_bank_)  # the seed fixes views and coreset


def test_image_score_is_the_reweighted_top_patch_above_the_image_baseline_by_brute_force(parts):
    support, test = parts[0][:1], parts[1][:3]
    detector = lineguard.create("fewshot", image_size=64, weights="random", coreset_ratio=0.3, reweight_neighbours=4,
                                **FEW_VIEWS).fit(support)
    result = detector.predict(test)
    bank = detector.memory_bank_
    feats = detector.extractor(match_lighting(test, detector.lighting_))  # (B, D, h, w), support's lighting
    for i, f in enumerate(feats):
        queries = f.flatten(1).T  # (h·w, D)
        dist = torch.cdist(queries, bank)  # (h·w, M)
        top = dist.min(1).values.argmax()
        m_test_star, m_star = queries[top], bank[dist[top].argmin()]
        neighbours = torch.cdist(m_star[None], bank)[0].argsort()[:4]
        expected = reweight((m_test_star - m_star).norm()[None],
                            (m_test_star - bank[neighbours]).norm(dim=1)[None])
        baseline = dist.min(1).values.quantile(0.25)  # the image's own typical patch distance
        assert result.scores[i].item() == pytest.approx((expected - baseline).item(), rel=1e-4)


def test_a_query_lit_differently_scores_as_under_the_support_lighting(parts):
    support, test = parts[0][:2], parts[1][:4]
    darker = test * 0.5  # the same parts under a dimmer light (nothing clipped)
    no_views = dict(hflip=False, vflip=False, brightness_views=0, image_size=64)  # ImageNet weights: real features
    matched = lineguard.create("fewshot", **no_views).fit(support)
    dark, normal = matched.predict(darker), matched.predict(test)
    assert torch.allclose(dark.scores, normal.scores, rtol=1e-3, atol=1e-4)
    assert torch.allclose(dark.maps, normal.maps, rtol=1e-3, atol=1e-4)
    plain = lineguard.create("fewshot", normalize_lighting=False, **no_views).fit(support)
    assert not hasattr(plain, "lighting_")
    # every patch of the dimmer parts moves away from the bank (the image score, measured above the image's
    # own baseline, hides a shift of all patches alike; the maps show it)
    dark, normal = plain.predict(darker), plain.predict(test)
    assert (dark.maps.mean((1, 2)) > 1.1 * normal.maps.mean((1, 2))).all()


def test_all_augmentations_off_is_plain_patchcore_on_the_support(parts):
    support = parts[0][:1]
    off = dict(hflip=False, vflip=False, rotation_views=0, translation_views=0, brightness_views=0, contrast_views=0,
               grayscale=False)
    detector = lineguard.create("fewshot", image_size=64, weights="random", coreset_ratio=1.0, **off).fit(support)
    assert detector.augmentations().views_per_image == 1
    assert detector.memory_bank_.shape[0] == (64 // 8) ** 2


@pytest.mark.parametrize(("params", "error", "message"), [
    (dict(coreset_ratio=0.0), ValueError, "coreset_ratio"),
    (dict(reweight_neighbours=0), ValueError, "parameter reweight_neighbours must be at least 1"),
    (dict(max_angle=-5.0), ParameterError, "max_angle"),
    (dict(brightness_views=2, brightness_delta=1.5), ParameterError, "brightness_delta"),
])
def test_bad_parameters_fail_before_any_feature_is_extracted(params, error, message):
    detector = lineguard.create("fewshot", backbone="no-such-backbone", **params)
    with pytest.raises(error, match=message):
        detector.fit(torch.zeros(1, 3, 64, 64))


def test_brightness_views_keep_a_darker_exposure_of_a_good_part_normal(parts):
    support, test, labels, _ = parts
    good = test[labels == 0][:2]
    darker = good * 0.6  # the same good parts under a dimmer light
    plain, lit = (lineguard.create("fewshot", image_size=SIZE, hflip=False, vflip=False, brightness_views=views,
                                   baseline_quantile=None, normalize_lighting=False).fit(support[:2])
                  for views in (0, 6))
    rise = [detector.predict(darker).scores - detector.predict(good).scores for detector in (plain, lit)]
    assert (rise[1] < rise[0]).all()  # the views cover the dimmer look
    assert (rise[1] < 0.5 * rise[0]).all()


def test_baseline_cancels_a_look_the_support_lacks_but_not_a_defect(parts):
    support, test, labels, _ = parts
    params = dict(image_size=SIZE, hflip=False, vflip=False, brightness_views=0, normalize_lighting=False)
    good = test[labels == 0]
    plain, relative = (lineguard.create("fewshot", baseline_quantile=q, **params).fit(support[:2])
                       for q in (None, 0.25))
    rise = [(d.predict(good * 0.6).scores - d.predict(good).scores).mean() for d in (plain, relative)]
    assert rise[0] > 0  # a light the support never saw raises every patch, so the image score
    assert abs(rise[1]) < 0.5 * rise[0]  # measured from the image's own baseline, most of that rise is gone
    assert image_auroc(labels, relative.predict(test).scores) >= 0.9
