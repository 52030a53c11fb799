"""The lifecycle report reads as a lesson: built from fake figures (no training), report.md defines every
metric once before it is used, has no repeated heading, quotes samples as text, explains best-of-N's
reward hacking and the PEFT numbers from the numbers, and never prints an internal acceptance line;
the plots have titles, labels and legends whose texts do not overlap."""
import itertools
import math
import re

import pytest

from minifm.data import tinyworld
from minifm.lifecycle import STAGES
from minifm.lifecycle import report as R
from minifm.lifecycle.peft_comparison import lora_verdict

SAMPLE_WITH_NEWLINE = "Pavel has six fish.\nIda keeps *two* dogs <|extra_4|> and_a [link](x)\n# not a heading"


def fake_curate():
    figures = {"documents": 227, "bytes": 120_485, "kept": 200, "dropped": 27, "noise_documents": 26,
               "noise_removed_fraction": 1.0, "clean_kept_fraction": 1.0,
               "rules": {"document_words": {"seen": 227, "dropped": 4}}}
    rules = [{"rule": "document_words", "seen": 227, "dropped": 4, "example_reason": "43 words < min_words 50"},
             {"rule": "exact_dedup", "seen": 223, "dropped": 3, "example_reason": "exact duplicate | of document 16"}]
    return figures, rules


def fake_tokenizer():
    stats = {"en": {"texts": 164, "tokens": 47_588, "tokens_per_word": 2.918, "bytes_per_token": 1.822,
                    "ratio_to_best": 1.0},
             "de": {"texts": 11, "tokens": 4_415, "tokens_per_word": 4.316, "bytes_per_token": 1.389,
                    "ratio_to_best": 1.479}}
    return {"vocab_size": 384, "special_tokens": 41, "train_seconds": 0.21, "bytes_per_token": 1.7234,
            "tokens": 52_003, "fertility": stats}


def fake_pretrain():
    return {"params": 128_768, "steps": 60, "tokens": 61_440, "train_elapsed_s": 4.2049, "tokens_per_s_median": 15356.4,
            "first_loss": 5.9564, "final_train_loss": 3.5748, "val_loss": 3.6332, "val_ppl": 37.833, "vocab_size": 384,
            "loss_curve": "pretrain/loss_curve.png"}


def fake_sampling():
    labels = {"greedy": {"do_sample": False}, "temperature 0.7": {"do_sample": True, "temperature": 0.7, "top_k": 0},
              "temperature 1.0": {"do_sample": True, "temperature": 1.0, "top_k": 0},
              "temperature 1.5": {"do_sample": True, "temperature": 1.5, "top_k": 0},
              "top-k 10": {"do_sample": True, "top_k": 10}, "top-p 0.9": {"do_sample": True, "top_k": 0, "top_p": 0.9},
              "min-p 0.1": {"do_sample": True, "top_k": 0, "min_p": 0.1}}
    results = {}
    for i, (label, options) in enumerate(labels.items()):
        results[label] = {"options": options, "distinct_1": 0.1 + 0.1 * i, "distinct_2": 0.15 + 0.12 * i,
                          "mean_loglik": -0.66 - 0.4 * i, "mean_length": 24.0}
    examples = {label: [SAMPLE_WITH_NEWLINE, "The favourite colour of Tomas is blue.\x10", "1. There are five"]
                for label in labels}
    return {"prompts": ["Pavel has six", "The favourite colour", "There are five"], "max_new_tokens": 24,
            "settings": results, "examples": examples}


def fake_post_training(best_of_n_hacks: bool = True):
    tasks = tinyworld.instructions("test", n=3)
    prompts = [t["prompt"] for t in tasks]
    answers = {"sft": [tasks[0]["completion"], "wrong", "no idea"],
               "ppo": ["Sure! " + tasks[0]["completion"], "wrong\nagain", "x"],
               "dpo": ["Certainly! " + tasks[0]["completion"], "wrong", "y"],
               "best_of_n": ["Happy to help! fish", "wrong", "z"]}
    numbers = {  # name: (ground truth, paired difference, learned, polite share, kl)
        "sft": (-0.567, 0.0, 0.452, 0.115, 0.0), "ppo": (-0.481, 0.086, 1.182, 0.364, 0.824),
        "dpo": (-0.472, 0.095, 1.143, 0.407, 0.769),
        "best_of_n": ((-0.582, -0.015, 1.421, 0.373, math.log(8) - 7 / 8) if best_of_n_hacks
                      else (-0.40, 0.167, 1.421, 0.373, math.log(8) - 7 / 8))}
    table = {}
    for name, (truth, difference, learned, polite, kl) in numbers.items():
        table[name] = {"ground_truth_reward": truth, "ground_truth_reward_se": 0.035, "difference_vs_sft": difference,
                       "difference_vs_sft_se": 0.0 if name == "sft" else 0.022, "learned_reward": learned,
                       "polite_fraction": polite, "accuracy_sampled": 0.219, "kl_to_sft": kl,
                       "greedy": {"accuracy": 0.292, "mean_ground_truth_reward": -0.433}, "n_prompts": 363,
                       "samples_per_prompt": 4,
                       "examples": [{"prompt": p, "response": a} for p, a in zip(prompts, answers[name])]}
    history = [{"iteration": i + 1, "reward_mean": 0.1 * i, "ground_truth_reward_mean": -0.5 + 0.01 * (i % 3),
                "kl": 0.05 * i + 0.1 * (i % 2)} for i in range(12)]
    return {"temperature": 0.7,
            "sft": {"accuracy_before": 0.0, "accuracy_after": 0.292, "ground_truth_reward_before": -1.498,
                    "ground_truth_reward_after": -0.433, "seconds": 102.3},
            "reward": {"preference_accuracy": 0.87, "pearson_r": 0.309, "spearman_r": 0.66, "seconds": 255.0},
            "ppo": {"seconds": 333.2, "history": history}, "dpo": {"seconds": 202.2},
            "evaluation": table, "evaluation_seconds": 686.3, "seconds": 1582.1}


PEFT_NUMBERS = [  # method, setting, trainable, accuracy, ground truth, train loss, seconds
    ("full", "full fine-tuning", 936_704, 0.234, -0.539, 0.691, 64.5),
    ("lora_r1", "LoRA r=1", 2_688, 0.0, -1.017, 1.501, 22.8),
    ("lora_r4", "LoRA r=4", 8_832, 0.016, -0.988, 1.269, 23.4),
    ("lora_r16", "LoRA r=16 (q, v), alpha 32 + 5 special-token rows", 33_408, 0.047, -0.916, 1.153, 93.6),
    ("adapter", "bottleneck adapter (rf 16)", 17_472, 0.0, -1.011, 1.834, 37.9),
    ("prompt", "prompt tuning (P=8)", 1_024, 0.0, -1.419, 2.846, 62.0),
    ("prefix", "prefix tuning (P=8)", 8_192, 0.0, -1.376, 3.075, 61.0),
    ("ia3", "IA3", 3_072, 0.0, -1.105, 2.241, 61.2),
]


def fake_peft(full_accuracy: float = 0.234):
    rows = [{"method": m, "setting": s, "trainable_params": n, "trainable_fraction": n / 936_704,
             "accuracy": full_accuracy if m == "full" else a, "mean_ground_truth_reward": g, "train_loss": loss,
             "wall_time_s": t, "optimizer_bytes": 8 * n} for m, s, n, a, g, loss, t in PEFT_NUMBERS]
    config = {"max_steps": 120, "per_device_train_batch_size": 16, "n_test": 64, "lora_targets": ["q_proj", "v_proj"],
              "lora_trainable_tokens": ["<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
              "num_virtual_tokens": 8, "reduction_factor": 16, "base_params": 936_704}
    return rows, config


def build_report(best_of_n_hacks: bool = True) -> str:
    """report.md as the lifecycle assembles it (a `## title` per stage, then the stage's markdown)."""
    curate, rules = fake_curate()
    rows, config = fake_peft()
    peft = R.peft_markdown(rows, config, n_train_examples=3000) + "\n\n" + lora_verdict(rows)["summary"] \
        + "\n\n![PEFT trade-off](peft/peft_tradeoff.png)"
    markdown = {"curate": R.curate_markdown(curate, rules), "tokenizer": R.tokenizer_markdown(fake_tokenizer()),
                "pretrain": R.pretrain_markdown(fake_pretrain(), {"n_layer": 2, "n_embd": 64, "n_head": 4,
                                                                  "block_size": 64}),
                "sampling": R.sampling_markdown(fake_sampling()),
                "post_training": R.post_training_markdown(fake_post_training(best_of_n_hacks)), "peft": peft}
    sections = ["# minifm lifecycle report (fake preset)\n"]
    sections += [f"## {stage.title}\n\n{markdown[stage.name]}\n\n*1.0 s*\n" for stage in STAGES]
    return "\n".join(sections)


@pytest.fixture(scope="module")
def report_md():
    return build_report()


def headings(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if re.match(r"^#{1,6} ", line)]


def test_no_heading_repeats(report_md):
    found = headings(report_md)
    assert len(found) == len(STAGES) + 1
    assert len(found) == len(set(found)), found


def test_every_metric_is_defined_once_before_its_first_use(report_md):
    for term, patterns in R.METRIC_TERMS.items():
        marker = f"**{term}**"
        assert report_md.count(marker) == 1, f"{term!r} defined {report_md.count(marker)} times"
        defined_at = report_md.index(marker)
        for pattern in patterns:
            first = re.search(pattern, report_md)
            assert first is not None, f"{term!r}: {pattern!r} never used"
            assert first.start() >= defined_at, \
                f"{term!r} used before its definition: ...{report_md[max(0, first.start() - 80):first.end() + 20]!r}"


def test_defining_an_unlisted_metric_is_refused():
    with pytest.raises(KeyError, match="METRIC_TERMS"):
        R.define("vibes", "how it feels")


def test_the_ground_truth_scale_is_tinyworlds():
    scale = R.ground_truth_scale()
    assert (scale["worst"], scale["best"]) == pytest.approx((-2.0, 1.2))
    assert scale["lowest_correct"] == pytest.approx(0.0) and scale["highest_wrong"] == pytest.approx(-0.8)
    prompt = tinyworld.instructions("test", n=1)[0]
    assert tinyworld.ground_truth_reward(prompt["prompt"], "Sure! " + prompt["completion"]) <= scale["best"]


def test_samples_are_quoted_text_not_reprs(report_md):
    assert "\\n" not in report_md                       # no literal backslash-n anywhere
    assert "'Pavel has six" not in report_md and '"Pavel has six' not in report_md
    assert ("> Pavel has six fish.\\\n"                                 # a hard line break, then the next line
            "> Ida keeps \\*two\\* dogs \\<|extra\\_4|> and\\_a \\[link\\](x)\\\n"   # markup escaped
            "> \\# not a heading") in report_md
    assert "␐" in report_md and "> 1\\. There are five" in report_md   # control picture; no accidental list
    assert "“wrong ↵ again”" in report_md                               # a table cell keeps its line break visible


def test_no_internal_acceptance_line(report_md):
    for text in ("NOT met", "target (", ">= 90%", "met)"):
        assert text not in report_md
    assert "(20% of its accuracy)" in report_md                            # the ratio stays, as information


def test_one_precision_per_quantity(report_md):
    section = report_md[report_md.index("| policy | ground-truth reward"):]
    rows = [line for line in section.splitlines()[2:6]]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"[+-]\d\.\d{3} ± \d\.\d{3}", cells[1]) and re.fullmatch(r"[+-]\d\.\d{3}", cells[3]), row
        assert all(re.fullmatch(r"\d\.\d{3}", cell) for cell in cells[4:7]), row
    assert "| held-out perplexity | 37.83 |" in report_md and "| first train loss | 5.956 |" in report_md
    assert "| tokens/s (median step) | 15,356 |" in report_md and "| training time (s) | 4.2 |" in report_md
    assert "e+0" not in report_md                                       # no scientific notation anywhere


def test_best_of_n_is_called_reward_hacking_only_when_the_numbers_say_so(report_md):
    assert "reward hacking" in report_md and "highest learned reward" in report_md
    honest = build_report(best_of_n_hacks=False)
    assert "reward hacking" not in honest
    assert "points the right way" in honest


def test_peft_section_explains_zeros_and_what_each_method_trains(report_md):
    section = report_md[report_md.index("## Parameter-efficient"):]
    assert "lora_r1, adapter, prompt, prefix and ia3 scored 0.000" in section
    assert "120 steps of 16 examples" in section and "0.6 passes over the 3,000 training examples" in section
    for method in ("*full*", "*lora_r16*", "*adapter*", "*prompt*", "*prefix*", "*ia3*"):
        assert method in section
    rows, config = fake_peft(full_accuracy=0.0)
    text = R.peft_markdown(rows, config)
    assert "not even full fine-tuning" in text and "lora_r16 1.153" in text


def test_reward_model_definitions_follow_the_run():
    summary = fake_post_training()
    text = R.post_training_markdown(summary)
    assert "= 1.204 for N = 8" in text                                  # log 8 - 7/8, N recovered from the bound
    assert "PPO, DPO and best-of-N answer politely far more often" in text


# ---------------------------------------------------------------------------------------------- plots
def texts_of(figure):
    """Every visible, non-empty text a reader sees (titles, axis labels, annotations, legends), not tick labels."""
    figure.canvas.draw()
    texts = list(figure.texts)
    for axes in figure.axes:
        texts += [axes.title, axes.xaxis.label, axes.yaxis.label] + list(axes.texts)
        if axes.get_legend() is not None:
            texts += list(axes.get_legend().get_texts())
    for legend in figure.legends:
        texts += list(legend.get_texts())
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def assert_readable(figure, expected_legend: list[str]):
    renderer = figure.canvas.get_renderer()
    for axes in figure.axes:
        if axes.get_label() == "<colorbar>":
            continue
        assert axes.get_title() or figure._suptitle is not None, "every panel has a title"
        assert axes.get_xlabel() and (axes.get_ylabel() or axes.get_yticklabels()), "every panel has axis labels"
    texts = texts_of(figure)
    shown = [t.get_text() for t in texts]
    for label in expected_legend:
        assert label in shown, f"{label!r} is not shown"
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"labels overlap: {a!r} and {b!r}"


def close(figure):
    R.pyplot().close(figure)


def test_sampling_plot_has_a_legend_and_arrows_in_temperature_order():
    results = fake_sampling()["settings"]
    figure = R.figure_sampling_tradeoff(results)
    try:
        assert_readable(figure, list(results))
        axes = figure.axes[0]
        arrows = [t for t in axes.texts if getattr(t, "arrow_patch", None) is not None]
        assert len(arrows) == 3 and all(not t.get_text() for t in arrows)   # greedy -> 0.7 -> 1.0 -> 1.5, unlabeled
        assert arrows[0].xy == pytest.approx((results["temperature 0.7"]["distinct_2"],
                                              results["temperature 0.7"]["mean_loglik"]))
    finally:
        close(figure)


def test_reward_vs_kl_has_a_title_and_no_tangled_line():
    summary = fake_post_training()
    figure = R.figure_reward_vs_kl(summary["ppo"]["history"], summary["evaluation"])
    try:
        assert_readable(figure, ["sft (held-out)", "best_of_n (held-out), x = KL upper bound"])
        axes = figure.axes[0]
        assert axes.get_title()
        assert all(len(line.get_xdata()) <= 2 for line in axes.get_lines()), "PPO iterations must not be one line"
        ppo = [c for c in axes.collections if len(c.get_offsets()) == len(summary["ppo"]["history"])]
        assert ppo and ppo[0].get_array() is not None                     # coloured by iteration
        assert any(a.get_label() == "<colorbar>" for a in figure.axes)
    finally:
        close(figure)


def test_ppo_rewards_plot_is_labelled():
    figure = R.figure_ppo_rewards(fake_post_training()["ppo"]["history"])
    try:
        assert_readable(figure, ["ground-truth reward"])
    finally:
        close(figure)


@pytest.mark.parametrize("full_accuracy", [0.234, 0.0])
def test_peft_plot_names_every_method_without_collisions(full_accuracy):
    rows, _ = fake_peft(full_accuracy)
    figure = R.figure_peft_tradeoff(rows)
    try:
        assert_readable(figure, [row["method"] for row in rows])
        assert figure._suptitle is not None and figure._suptitle.get_text()
        scatter_axes = figure.axes[:2]
        assert all(axes.get_xscale() == "log" for axes in scatter_axes)  # parameters span three decades
        assert figure.axes[3].get_xscale() == "log"
        assert not any(axes.texts for axes in figure.axes)              # names live in the legend, not on points
        assert scatter_axes[0].get_ylim()[1] < 0.5                      # small accuracies fill the panel
    finally:
        close(figure)


def test_plots_write_pngs(tmp_path):
    summary = fake_post_training()
    rows, _ = fake_peft()
    paths = [R.plot_sampling_tradeoff(fake_sampling()["settings"], tmp_path / "a.png"),
             R.plot_reward_vs_kl(summary["ppo"]["history"], summary["evaluation"], tmp_path / "b.png"),
             R.plot_ppo_rewards(summary["ppo"]["history"], tmp_path / "c.png"),
             R.plot_peft_tradeoff(rows, tmp_path / "d" / "e.png")]
    assert all(path.stat().st_size > 0 for path in paths)


def test_quote_helpers():
    assert R.quote_block("a\n\nb") == "> a\n>\n> b"
    assert R.quote_block("- item\n> quote\n+ x") == "> \\- item\\\n> \\> quote\\\n> \\+ x"
    assert R.quote_inline("a|b\nc") == "“a\\|b ↵ c”"
    assert R.fmt_reward(float("nan")) == "n/a" and R.fmt_reward(0.0) == "+0.000"


def test_the_overlap_check_catches_labels_written_next_to_points():
    """The old sampling plot's failure (a text label beside each point) is what assert_readable rejects."""
    plt = R.pyplot()
    figure, axes = plt.subplots()
    try:
        for label, (x, y) in {"greedy": (0.53, -0.66), "temperature 0.7": (0.617, -0.869),
                              "min-p 0.1": (0.632, -0.878), "temperature 1.5": (0.84, -3.2)}.items():
            axes.scatter([x], [y])
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axes.set_title("old style")
        axes.set_xlabel("x")
        axes.set_ylabel("y")
        with pytest.raises(AssertionError, match="labels overlap"):
            assert_readable(figure, [])
    finally:
        close(figure)
