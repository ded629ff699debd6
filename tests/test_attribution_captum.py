"""unpact's replace-ablation LOO and integrated gradients against captum 0.9 on the same model, prompt,
target and baseline (captum is a test-only dependency).

captum is run only in its correct modes (docs/design.md, Known pitfalls in peers): FeatureAblation
through LLMAttribution with
``forward_in_tokens=False`` (one forward of prompt+answer per perturbation; its default cached mode is
wrong under transformers 5). captum attributes every token of the whole prompt text and its quantity is
the *summed* answer log-prob, so unpact runs with ``target="sum"`` and only the question-token entries of
captum's result are compared; template tokens keep their ids in both (the baseline replaces only the
question tokens, by the pad id).
"""

import numpy as np
import pytest
import torch

from unpact.attribution import gradient_attributions, loo_attributions

captum_attr = pytest.importorskip("captum.attr")

QUESTIONS = ["Where was Marthe Bramley born?", "What is the opposite of hot?"]
ANSWERS = ["Drennick", "cold"]
# sentence answers of different lengths: one IG of the summed answer (unpact) against captum's one IG per
# answer token, with rows of both answer lengths sharing batches
SENTENCES = ["I think it was Drennick, in the north.", "Cold, as far as I know."]


def captum_input(tok, fmt, question):
    enc = fmt.encode(question)
    text = fmt.render(question)
    # captum tokenizes the rendered text itself: the comparison is only meaningful when that gives
    # exactly unpact's spliced prompt ids.
    assert tok.encode(text) == enc.ids
    return enc, text


def test_replace_ablation_equals_captum_feature_ablation(tiny, tiny_scorer):
    model, tok, fmt = tiny
    ours = loo_attributions(tiny_scorer, QUESTIONS, ANSWERS, ablation="replace", target="sum")
    llm = captum_attr.LLMAttribution(captum_attr.FeatureAblation(model), tok)
    for q, a, attr in zip(QUESTIONS, ANSWERS, ours, strict=True):
        enc, text = captum_input(tok, fmt, q)
        inp = captum_attr.TextTokenInput(text, tok, baselines=tok.pad_token_id)
        res = llm.attribute(inp, target=torch.tensor(fmt.encode_answer(a)), forward_in_tokens=False)
        theirs = res.seq_attr.detach().numpy()[enc.span[0]:enc.span[1]]
        np.testing.assert_allclose(attr.contributions, theirs, atol=1e-4)
        assert np.abs(theirs).max() > 1e-3  # not a comparison of zeros


@pytest.mark.filterwarnings("ignore:the baseline token's embedding")
@pytest.mark.parametrize("steps, baseline_id, answers", [(8, None, ANSWERS), (24, None, ANSWERS), (16, 50, ANSWERS),
                                                     (8, 50, SENTENCES)])
def test_integrated_gradients_equal_captum_layer_ig(tiny, tiny_scorer, steps, baseline_id, answers):
    # None: the pad token (the default; its embedding row is zero in this model), 50: an ordinary token
    model, tok, fmt = tiny
    base = tok.pad_token_id if baseline_id is None else baseline_id
    ours = gradient_attributions(tiny_scorer, QUESTIONS, answers, method="integrated_gradients", steps=steps,
                                 rule="gausslegendre", target="sum", baseline_id=baseline_id)
    lig = captum_attr.LLMGradientAttribution(
        captum_attr.LayerIntegratedGradients(model, model.get_input_embeddings()), tok)
    for q, a, attr in zip(QUESTIONS, answers, ours, strict=True):
        enc, text = captum_input(tok, fmt, q)
        s, e = enc.span
        # captum's TextTokenInput works in "presence" space: 1 = the token itself, anything else = the
        # input's baseline token. So the IG baseline is 0 at the question positions (→ ``base``), 1 on
        # the template (unchanged); captum's default (all zeros) would also replace the template and BOS.
        presence_baseline = torch.ones(1, len(enc.ids), dtype=torch.long)
        presence_baseline[0, s:e] = 0
        res = lig.attribute(captum_attr.TextTokenInput(text, tok, baselines=base),
                            target=torch.tensor(fmt.encode_answer(a)), baselines=presence_baseline,
                            n_steps=steps, method="gausslegendre")
        full = res.seq_attr.detach().numpy()
        # Tolerance: both sides integrate the same float32 function at the same nodes; they differ only in
        # summation order (captum: one IG per answer token, then a sum; unpact: one IG of the sum).
        np.testing.assert_allclose(attr.contributions, full[s:e], atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(full[:s], 0, atol=1e-7)  # template tokens equal their baseline
        assert np.abs(full[s:e]).max() > 1e-3
