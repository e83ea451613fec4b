"""replace_section: one writer's section is replaced, every other section (and its hand-written text) kept."""

from fairmed_core.report.sections import replace_section


def test_replaces_only_the_named_section_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\n## A\n\nold a\n\n## A: a variant\n\nvariant text\n\n## B\n\nb text\n")
    replace_section(doc, "## A", "## A\n\nnew a\n")
    assert doc.read_text() == "# Results\n\n## A\n\nnew a\n\n## A: a variant\n\nvariant text\n\n## B\n\nb text\n"


def test_a_heading_that_only_prefixes_another_is_appended_not_matched(tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\n## A: a variant\n\nvariant text\n")
    replace_section(doc, "## A", "## A\n\nnew a\n")
    assert doc.read_text() == "# Results\n\n## A: a variant\n\nvariant text\n\n## A\n\nnew a\n"


def test_a_missing_file_starts_with_the_preamble(tmp_path):
    doc = tmp_path / "new.md"
    replace_section(doc, "## A", "## A\n\nx\n")
    assert doc.read_text() == "# Results\n\n## A\n\nx\n"
