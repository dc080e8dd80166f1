"""Model cards: a finished checkpoint folder (trained, exported, saved by a Pipeline) carries a README.md
generated from its config.json that states the command, the metrics and how to load it, with YAML front
matter the Hugging Face Hub can read; periodic saves write none, and a card written by hand is kept."""

from __future__ import annotations

import json

import pytest

from argen.card import MARKER, model_card, write_card
from argen.checkpoint import read_config, save_model
from argen.cli import main
from argen.pipeline import Pipeline
from argen.pretrained import export, list_models, model_path

CPU = ["--threads", "1", "--quiet", "--device", "cpu"]
TINY_TOK = ["--set", "ch=8", "--set", "z_channels=4", "--set", "codebook_size=16"]
TINY_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    tok, gen = root / "tok", root / "gen"
    assert main(["train", "tokenizer", "--preset", "msvq-digits", "--steps", "4", "--batch-size", "16",
                 "--out", str(tok), *TINY_TOK, *CPU]) == 0
    assert main(["train", "generator", "--preset", "var-digits", "--tokenizer", str(tok), "--steps", "4",
                 "--batch-size", "16", "--out", str(gen), *TINY_GEN, *CPU]) == 0
    return tok, gen


def front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")  # comes with huggingface_hub (the dev extra)
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_trained_generator_and_its_tokenizer_carry_cards(trained):
    tok, gen = trained
    card = (gen / "README.md").read_text()
    meta = read_config(gen)["meta"]
    assert meta["command"].startswith("argen train generator") and meta["command"] in card
    for key, value in meta["eval"].items():  # every metric, by name and value
        assert f"`{key}`" in card
        assert (f"{value:.4g}" if isinstance(value, float) else str(value)) in card
    assert "argen sample --checkpoint path/to/generator" in card
    assert 'Pipeline.from_pretrained("path/to/generator")' in card and "hf://ORG/NAME" in card
    assert "4 steps" in card and "var-digits" in card and "| `cfg` |" in card  # steps, preset, sampler
    fm = front_matter(card)
    assert fm["library_name"] == "argen" and fm["license"] == "apache-2.0"
    assert {"image-generation", "autoregressive", "var", "digits"} <= set(fm["tags"])
    for d in (tok, gen / "tokenizer"):  # the tokenizer's own folder and its copy inside the generator
        tcard = (d / "README.md").read_text()
        assert "MultiScaleVQ" in tcard and "argen train tokenizer" in tcard and "`test_psnr`" in tcard
        assert "image-tokenizer" in front_matter(tcard)["tags"]


def test_periodic_saves_write_no_card(tmp_path):
    from helpers import tiny_msvq

    save_model(tmp_path, tiny_msvq())
    assert not (tmp_path / "README.md").exists()


def test_export_and_save_pretrained_write_cards(trained, tmp_path):
    _, gen = trained
    shipped = export(gen, "tiny-var", models_dir=tmp_path / "models")
    card = (shipped / "README.md").read_text()
    assert "argen sample --model tiny-var" in card and 'Pipeline.from_pretrained("tiny-var")' in card
    assert (shipped / "tokenizer" / "README.md").is_file()
    Pipeline.from_pretrained(gen).save_pretrained(tmp_path / "saved")
    assert "## Sampler defaults" in (tmp_path / "saved" / "README.md").read_text()
    assert (tmp_path / "saved" / "tokenizer" / "README.md").is_file()


def test_a_hand_written_card_is_kept_and_argen_cards_are_rewritten(trained, tmp_path):
    _, gen = trained
    folder = tmp_path / "g"
    Pipeline.from_pretrained(gen).save_pretrained(folder)
    (folder / "README.md").write_text("# mine\n")
    write_card(folder, load_as="hf://org/name")
    assert (folder / "README.md").read_text() == "# mine\n"
    assert MARKER in (folder / "tokenizer" / "README.md").read_text()  # argen's own: rewritten
    (folder / "README.md").unlink()
    write_card(folder, load_as="hf://org/name")
    assert "argen sample --checkpoint hf://org/name" in (folder / "README.md").read_text()


def test_a_card_without_weights_shows_the_config(tmp_path):
    from helpers import tiny_msvq

    save_model(tmp_path, tiny_msvq(), meta={"converted_from": "var", "source": "/home/someone/vae_ch160v4096z32.pth"})
    (tmp_path / "model.safetensors").unlink()
    card = model_card(tmp_path)
    assert '"codebook_size": 16' in card and "vae_ch160v4096z32.pth" in card and "/home/someone" not in card
    assert front_matter(card)["license"] == "other"  # converted weights keep their release's license


@pytest.mark.parametrize("name", list_models())
def test_the_shipped_cards_are_current(name):
    """The shipped models' cards are generated, not edited: re-export (or write_card) after changing one."""
    folder = model_path(name)
    fix = (f"stale card of {name}: python -c \"from argen.card import write_card; from argen.pretrained import "
           f"model_path; write_card(model_path('{name}'), load_as='{name}')\"")
    assert (folder / "README.md").read_text() == model_card(folder, load_as=name), fix
    assert (folder / "tokenizer" / "README.md").read_text() == model_card(folder / "tokenizer"), fix
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert config["meta"]["command"] in card
    if config["config"].get("text"):  # a text model takes prompts: its card must not offer class labels
        assert "Text-to-image: conditioned on prompts" in card and "Class-conditional" not in card
        assert "(captioned images)" in card
        assert f"argen sample --model {name} --prompt" in card and "pipe(prompts=" in card and "labels" not in card
    else:
        assert f"argen sample --model {name} --labels" in card and "pipe(labels=" in card
