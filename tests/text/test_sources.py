"""Corpora of several files, folders and one-line documents."""

import json

import pytest

import charnn.text.reading as reading
from charnn.errors import CharnnError
from charnn.text.corpus import MANY_DOCUMENTS, load_corpus, split_train_val
from charnn.text.reading import lines
from charnn.text.sources import CorpusSpec

from conftest import TINY, make_text, run_charnn


@pytest.fixture
def folder(tmp_path):
    """Nested text files, plus a hidden file and a binary one that must be left out."""
    root = tmp_path / "notes"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("alpha one\n", encoding="utf-8")
    (root / "b" / "c.txt").write_text("gamma three\n", encoding="utf-8")
    (root / "b" / "deep" / "d.md").write_text("delta four\n", encoding="utf-8")
    (root / "b" / "a2.txt").write_text("beta two\n", encoding="utf-8")
    (root / ".hidden.txt").write_text("SECRET\n", encoding="utf-8")
    (root / ".git" / "config").write_text("SECRET\n", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\x00\x00QQQ")
    return root


def text_of(corpus) -> str:
    return corpus.vocab.decode(corpus.ids)


def test_a_folder_is_its_text_files_in_path_order_joined_by_a_blank_line(folder):
    notes: list[str] = []
    corpus = load_corpus(CorpusSpec((str(folder),)), on_notice=notes.append)
    expected = "\n\n".join(["alpha one\n", "beta two\n", "gamma three\n", "delta four\n"])
    assert text_of(corpus) == expected  # a.txt, b/a2.txt, b/c.txt, b/deep/d.md
    assert "S" not in corpus.vocab and "Q" not in corpus.vocab
    assert notes == ["skipped 2 hidden and 1 binary file(s) in the folders given"]
    assert [path.rsplit("/", 1)[-1] for path, _ in corpus.files] == [
        "a.txt", "a2.txt", "c.txt", "d.md",
    ]  # fmt: skip


def test_glob_separator_and_explicit_files(folder, tmp_path):
    only_txt = load_corpus(CorpusSpec((str(folder),), glob="*.txt", separator="\n---\n"))
    assert text_of(only_txt) == "alpha one\n\n---\nbeta two\n\n---\ngamma three\n"
    extra = tmp_path / "extra.txt"
    extra.write_text("omega\n", encoding="utf-8")
    both = load_corpus(CorpusSpec((str(extra), str(folder / "a.txt"))))
    assert text_of(both) == "omega\n\n\nalpha one\n"  # in the order given


def test_many_line_documents_keep_whole_lines_for_validation(tmp_path):
    names = [f"name number {i:03d}" for i in range(200)]
    path = tmp_path / "names.txt"
    path.write_text("\n".join(names) + "\n\n", encoding="utf-8")  # a blank line is no document
    corpus = load_corpus(CorpusSpec((str(path),), doc_per_line=True), val_frac=0.1)
    assert corpus.documents == 200 >= MANY_DOCUMENTS
    train, val = split_train_val(corpus.ids, 0.1, corpus.val_start)
    val_lines = corpus.vocab.decode(val).split("\n")
    assert val_lines == names[9::10]  # every 10th line, whole, from all over the file
    train_lines = corpus.vocab.decode(train).rstrip("\n").split("\n")
    assert set(train_lines) == set(names) - set(val_lines)


def test_eval_with_no_file_reads_the_documents_a_run_held_out(tmp_path):
    held = "!" * 20  # on the lines the split holds out (every 10th), so its length tells
    names = "".join(f"name number {i:03d}{held if i % 10 == 9 else ''}\n" for i in range(200))
    path = tmp_path / "names.txt"
    path.write_text(names, encoding="utf-8")
    ck = tmp_path / "ck"
    proc = run_charnn("train", str(path), "--doc-per-line", "--max-steps", "4", "--eval-every",
                      "4", "--checkpoint-dir", str(ck), "--name", "names", *TINY)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    last = json.loads((ck / "names" / "metrics.jsonl").read_text().splitlines()[-1])
    scored = run_charnn("eval", str(ck / "names" / "last.pt"), "--json")
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout)
    assert result["chars"] == 20 * len(f"name number 000{held}") + 19  # 20 lines, not the tail
    assert result["bits_per_char"] == pytest.approx(last["val_bpc"], abs=1e-6)


def test_few_documents_keep_the_tail_split(folder):
    corpus = load_corpus(CorpusSpec((str(folder),)))
    assert corpus.documents == 4 < MANY_DOCUMENTS and corpus.val_start is None


def test_lines_are_streamed_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "CHUNK_BYTES", 7)
    path = tmp_path / "t.txt"
    path.write_text("first line\r\nsecond, longer line\n\nlast", encoding="utf-8")
    assert list(lines(path, "utf-8")) == ["first line", "second, longer line", "", "last"]


def test_train_on_a_folder_then_a_changed_file_refuses_the_resume(folder, tmp_path):
    ck = tmp_path / "ck"
    common = ["--checkpoint-dir", str(ck), "--name", "notes", *TINY[:-1]]  # not --quiet
    (folder / "more.txt").write_text(make_text(3_000), encoding="utf-8")
    proc = run_charnn("train", str(folder), "--max-steps", "2", "--batch-size", "4",
                      "--seq-len", "16", *common)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 hidden and 1 binary" in proc.stderr
    info = run_charnn("info", str(ck / "notes"))
    assert "corpus files 5" in info.stdout and "more.txt" in info.stdout
    described = json.loads(run_charnn("info", str(ck / "notes"), "--json").stdout)
    assert len(described["corpus_files"]) == 5

    (folder / "b" / "c.txt").write_text("gamma changed\n", encoding="utf-8")
    again = run_charnn("train", str(folder), "--max-steps", "4", "--resume", str(ck / "notes"),
                       "--checkpoint-dir", str(ck), "--quiet")  # fmt: skip
    assert again.returncode != 0
    assert "c.txt changed" in again.stderr and "Traceback" not in again.stderr


def test_an_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_charnn("train", str(tmp_path / "empty"), "--max-steps", "1", "--quiet")
    assert proc.returncode != 0 and "no text files" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_and_a_folder_holding_only_it_are_two_corpora(tmp_path):
    """A folder's corpus may be joined with others, so its vocabulary holds the separator; the
    plain file's does not, whichever of the two was encoded first."""
    (tmp_path / "dir").mkdir()
    plain = tmp_path / "dir" / "a.txt"
    plain.write_text("abc abc", encoding="utf-8")
    as_folder = load_corpus(CorpusSpec((str(tmp_path / "dir"),)))
    as_file = load_corpus(plain)
    assert "\n" in as_folder.vocab and "\n" not in as_file.vocab
    assert as_file.sha256 == as_folder.sha256  # the same text


def test_lines_that_are_all_blank_are_no_documents(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(CharnnError, match="holds no text"):
        load_corpus(CorpusSpec((str(path),), doc_per_line=True, separator="<|end|>"))


def test_csv_rows_that_cannot_be_read_are_one_line_and_a_long_field_is_read(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nhello,x\nworld,y\ncafé,x\n".encode("latin-1"))
    big = tmp_path / "big.csv"  # csv's own limit on a field is 128 KiB
    big.write_text(f"text,label\n{'a' * 200_000},x\n{'b' * 1_000},y\n", encoding="utf-8")
    common = ["--label-from", "field", "--max-steps", "1", "--checkpoint-dir", str(tmp_path)]
    proc = run_charnn("train", str(latin), *common, *TINY)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "latin.csv line 4 is not valid utf-8: bad byte 0xe9" in proc.stderr
    assert "pass --encoding (for example latin-1)" in proc.stderr
    proc = run_charnn("train", str(latin), *common, "--encoding", "latin-1", *TINY)
    assert proc.returncode == 0, proc.stderr
    proc = run_charnn("train", str(big), *common, *TINY)
    assert proc.returncode == 0, proc.stderr


def test_a_csv_error_is_one_line_naming_the_row(tmp_path, monkeypatch):
    import csv

    import charnn.text.sources as sources

    path = tmp_path / "rows.csv"
    path.write_text("text,label\nshort,x\nmuch longer,y\n", encoding="utf-8")
    monkeypatch.setattr(sources, "MAX_FIELD", 8)
    try:
        with pytest.raises(CharnnError) as refused:
            load_corpus(CorpusSpec((str(path),), label_from="field"))
    finally:
        csv.field_size_limit(2**31 - 1)  # as any CSV corpus sets it
    line = str(refused.value)
    assert "\n" not in line and "rows.csv row 2 is not valid CSV (field larger" in line, line


@pytest.mark.parametrize("encoding", ["utf-8", "utf_8", "UTF8"])
def test_a_csv_files_byte_order_mark_is_no_character(tmp_path, encoding):
    path = tmp_path / "bom.csv"
    text = f"text,label\nhello,x\n{encoding},y\n"  # a corpus of its own, not one cached
    path.write_text(text, encoding="utf-8-sig")
    corpus = load_corpus(CorpusSpec((str(path),), encoding, label_from="field"))
    assert corpus.labels == ("x", "y") and "\ufeff" not in corpus.vocab


def test_the_same_bytes_as_csv_and_as_jsonl_are_two_corpora(tmp_path):
    data = "text,label\nhello,x\nworld,y\n"
    (tmp_path / "rows.csv").write_text(data, encoding="utf-8")
    assert load_corpus(CorpusSpec((str(tmp_path / "rows.csv"),), label_from="field")).labels
    (tmp_path / "rows.jsonl").write_text(data, encoding="utf-8")  # not JSON: no cached CSV
    with pytest.raises(CharnnError, match="rows.jsonl row 1 is not valid JSON"):
        load_corpus(CorpusSpec((str(tmp_path / "rows.jsonl"),), label_from="field"))
