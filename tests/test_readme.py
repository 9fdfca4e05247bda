"""The README's state diagram and table are generated from the machine's own transition table."""

from __future__ import annotations

from pathlib import Path

from ustack.tcp import state

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_state_table_is_current() -> None:
    text = README.read_text()
    begin = text.index("<!-- STATES:BEGIN -->") + len("<!-- STATES:BEGIN -->")
    end = text.index("<!-- STATES:END -->")
    expected = "```mermaid\n" + state.mermaid().strip() + "\n```\n\n" + state.markdown_table()
    assert text[begin:end].strip() == expected.strip(), (
        "README.md's state diagram/table is stale: regenerate them from ustack.tcp.state "
        "(mermaid() and markdown_table()) between the STATES markers"
    )


def test_readme_has_the_two_commands() -> None:
    text = README.read_text()
    assert "python3 -m pip install . && python3 -m ustack demo" in text
    assert "python3 -m pip install -e '.[test]' && bash tests/run.sh" in text
