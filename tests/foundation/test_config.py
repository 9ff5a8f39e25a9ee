"""Project files: the templates validate; every mistake is named by its field path."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmlabel.config import config_from_yaml, load_config, parse_config
from llmlabel.errors import ConfigError, LabelError
from llmlabel.schema import Options, Taxonomy

from .conftest import CliResult, run_cli

SINGLE = "name: x\nlabels: {type: single, classes: [positive, negative]}\n"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(text, "p.yaml")
    return str(info.value)


@pytest.mark.parametrize("template", ["sentiment", "topic", "taxonomy"])
def test_init_writes_a_template_that_validates(tmp_path: Path, template: str, cli: Callable[..., CliResult]) -> None:
    result = cli("init", "out.yaml", "--template", template, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "out.yaml")
    assert config.name == template
    assert {"sentiment": "single", "topic": "multi", "taxonomy": "taxonomy"}[template] == config.labels.type
    assert config.labelers, "a template shows at least one labeler"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """A real process: the one-line error and exit code 1 as a user sees them."""
    (tmp_path / "llmlabel.yaml").write_text("keep me", encoding="utf-8")
    result = run_cli("init", cwd=tmp_path)
    assert result.returncode == 1
    assert "exists; pass --force" in result.stderr
    assert (tmp_path / "llmlabel.yaml").read_text(encoding="utf-8") == "keep me"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            SINGLE + "labelers:\n  - name: a\n    model: m\n    concurency: 3\n",
            "labelers.0.concurency: unknown field",
            id="unknown-key",
        ),
        pytest.param("name: x\n", "labels: required field is missing", id="missing-labels"),
        pytest.param(
            "name: x\nlabels: {type: single, classes: [a, b, a]}\n",
            "labels.classes: class 'a' is listed twice",
            id="duplicate-class-list",
        ),
        pytest.param(
            "name: x\nlabels:\n  type: multi\n  classes:\n    a: first\n    b: other\n    a: second\n",
            "line 7, column 5: key 'a' is repeated",
            id="duplicate-class-mapping",
        ),
        pytest.param(
            SINGLE + "policy: {max_votes: many}\n",
            "policy.max_votes: Input should be a valid integer",
            id="bad-type",
        ),
        pytest.param(
            "name: x\nlabels: {type: ranking, classes: [a, b]}\n",
            "labels: Input tag 'ranking'",
            id="unknown-schema-type",
        ),
        pytest.param(
            "name: x\nlabels: {type: single, classes: [a, b]\n",
            "not valid YAML at line 3, column 1",
            id="invalid-yaml",
        ),
        pytest.param(
            SINGLE + "policy: {min_human_votes: 5, max_votes: 3}\n",
            "policy: min_human_votes (5) exceeds max_votes (3)",
            id="min-human-over-max",
        ),
        pytest.param(
            SINGLE + "labelers: [{name: a, model: m, confidence: samples, samples: 5}]\n",
            "labelers.0: confidence 'samples' needs params.temperature > 0",
            id="samples-without-temperature",
        ),
        pytest.param(
            SINGLE + "labelers: [{name: a, model: m, confidence: samples, params: {temperature: 0.7}}]\n",
            "labelers.0: confidence 'samples' needs samples ≥ 2",
            id="samples-of-one",
        ),
        pytest.param(
            "name: x\nlabels: {type: taxonomy, tree: {A: [b, c]}, paths: [A/b, A/c]}\n",
            "labels: give the taxonomy as exactly one of 'tree' (nested mapping) or 'paths'",
            id="taxonomy-tree-and-paths",
        ),
        pytest.param(
            "name: x\nlabels: {type: taxonomy, paths: [A/b, A//c]}\n",
            "taxonomy path 'A//c' has an empty segment",
            id="taxonomy-empty-segment",
        ),
        pytest.param(
            "name: x\nlabels: {type: taxonomy, paths: [A/b, A/c], definitions: {A/d: nope}}\n",
            "definitions: 'A/d' is not a node of the taxonomy",
            id="taxonomy-unknown-definition",
        ),
        pytest.param(
            SINGLE + "labelers: [{name: a, model: m}, {name: a, model: n}]\n",
            "labeler names must be unique; repeated: a",
            id="duplicate-labeler",
        ),
        pytest.param(
            "name: 'has space'\nlabels: {type: single, classes: [a, b]}\n",
            "name: use letters, digits",
            id="bad-project-name",
        ),
        pytest.param("- a\n- b\n", "must be a YAML mapping, got list", id="not-a-mapping"),
    ],
)
def test_bad_project_file_names_the_field(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith("p.yaml: ")
    assert expected in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of("name: x\nlabels: {type: single, classes: [a, b]}\npolicy: {max_votes: 0, gold_rate: 2}\n")
    assert "policy.max_votes:" in message
    assert "policy.gold_rate:" in message


def test_yaml_merge_keys_still_work() -> None:
    config = config_from_yaml("<<: {name: x, labels: {type: single, classes: [a, b]}}\nname: y\n")
    assert config.name == "y"


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; create one with `llmlabel init`"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(bad)


def test_bom_in_project_file_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + SINGLE.encode())
    assert load_config(path).name == "x"


def test_content_hash_ignores_formatting() -> None:
    a = config_from_yaml(SINGLE)
    b = config_from_yaml("# comment\nlabels:\n  classes: [positive, negative]\n  type: single\nname: x\n")
    assert a.content_hash() == b.content_hash()
    assert a.content_hash() != config_from_yaml(SINGLE.replace("negative", "neutral")).content_hash()


def test_large_taxonomy_given_as_paths_validates_fast() -> None:
    paths = [f"D{a}/C{b}/L{c}" for a in range(10) for b in range(20) for c in range(25)]
    start = time.perf_counter()
    config = parse_config({"name": "big", "labels": {"type": "taxonomy", "paths": paths}})
    labels = config.labels
    assert isinstance(labels, Taxonomy)
    assert len(labels.leaves) == 5000
    assert len(labels.node_paths) == 10 + 200 + 5000
    assert labels.depth == 3
    assert labels.validate_label("D3/C4/L5") == "D3/C4/L5"
    assert labels.validate_label(" D3 / C4 ") == "D3/C4", "a coarse path is a valid label"
    assert labels.validate_label(["D3", "C4", "L5"]) == "D3/C4/L5"
    with pytest.raises(LabelError, match=r"'D3/C4/L99' is not a node of the taxonomy \(did you mean 'D3/C4/L9'\?\)"):
        labels.validate_label("D3/C4/L99")
    assert time.perf_counter() - start < 1.0


def test_taxonomy_tree_and_paths_agree() -> None:
    tree = config_from_yaml("name: t\nlabels: {type: taxonomy, tree: {A: [b, c], D: {e: [f, g]}}}\n").labels
    paths = config_from_yaml("name: t\nlabels: {type: taxonomy, paths: [A/b, A/c, D/e/f, D/e/g]}\n").labels
    assert isinstance(tree, Taxonomy) and isinstance(paths, Taxonomy)
    assert tree.node_paths == paths.node_paths
    assert tree.leaves == ["A/b", "A/c", "D/e/f", "D/e/g"]


def test_options_labels_are_checked_against_the_item() -> None:
    config = config_from_yaml("name: o\nlabels: {type: options, field: replies}\n")
    labels = config.labels
    assert isinstance(labels, Options)
    item = {"replies": ["first", "second"]}
    assert labels.validate_label("1", item) == 1
    assert labels.validate_label(0, {"replies": '["a", "b"]'}) == 0
    with pytest.raises(LabelError, match="option index 2 is out of range: the item has 2 options"):
        labels.validate_label(2, item)
    with pytest.raises(LabelError, match="option index -1 is out of range"):
        labels.validate_label(-1, item)
    with pytest.raises(LabelError, match="must be the 0-based index"):
        labels.validate_label(True, item)
    with pytest.raises(LabelError, match="must hold a list of at least 2 options"):
        labels.validate_label(0, {"replies": ["only"]})


def test_options_field_must_differ_from_id_field() -> None:
    assert "labels.field must differ from id_field" in error_of("name: o\nid_field: options\nlabels: {type: options}\n")


def test_single_and_multi_label_messages() -> None:
    single = config_from_yaml("name: s\nlabels: {type: single, classes: [positive, negative, neutral]}\n").labels
    with pytest.raises(LabelError) as info:
        single.validate_label("postive", None, " (item 'r-1')")
    assert str(info.value) == (
        "label 'postive' is not one of: positive, negative, neutral (did you mean 'positive'?) (item 'r-1')"
    )
    multi = config_from_yaml("name: m\nlabels: {type: multi, classes: [a, b, c]}\n").labels
    assert multi.validate_label("c|a") == ["a", "c"]
    assert multi.validate_label('["b", "b"]') == ["b"]
    assert multi.validate_label([]) == []
    with pytest.raises(LabelError, match="is not one of: a, b, c"):
        multi.validate_label("a|z")
