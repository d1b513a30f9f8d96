"""The screens `browse` opens over the table: confirm, working, result, a client's file,
edit, keys. Text from the database arrives here already made inert (`visible`, `plain`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, ProgressBar, Static

from pbclients.cli.render import plain, prompt, visible

if TYPE_CHECKING:
    from rich.console import RenderableType

    from pbclients.roster_view import ClientDetail

MODAL_CSS = """
ModalScreen { align: center middle; }
ModalScreen > Vertical, ModalScreen > VerticalScroll {
    width: 90%; max-width: 110; height: auto; max-height: 90%;
    border: thick $primary; background: $surface; padding: 1 2;
}
ModalScreen .hint { color: $text-muted; margin-top: 1; }
ModalScreen Input { margin-top: 1; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """The command's confirmation question; `typed`: the count must be typed (delete)."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Confirm"),
        Binding("n", "answer(False)", "Cancel"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str, typed: int | None = None) -> None:
        super().__init__()
        self.question = question
        self.typed = typed

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            # The question is composed by the command with data through `visible`; `prompt`
            # makes anything it missed inert and keeps its own line breaks.
            yield Static(Text(prompt(self.question)), id="question")
            if self.typed is not None:
                yield Input(placeholder=f"Type {self.typed} to confirm", id="typed")
                yield Label(f"Type {self.typed} and press Enter to confirm; Esc cancels.",
                            classes="hint")  # fmt: skip
            else:
                yield Label("y confirms, n or Esc cancels.", classes="hint")

    def on_mount(self) -> None:
        if self.typed is not None:
            self.query_one("#typed", Input).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # With a typed count, y is only a letter in the box: nothing is confirmed by one key.
        return not (self.typed is not None and parameters == (True,))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() == str(self.typed))

    def action_answer(self, agreed: bool) -> None:
        self.dismiss(agreed)


class ReasonScreen(ModalScreen[str | None]):
    """Asks why, for an action that needs a reason (a legal hold); Esc cancels."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def compose(self) -> ComposeResult:
        with Vertical(id="reason"):
            yield Label(self.label)
            yield Input(placeholder="Reason", id="reason-text")
            yield Label("Enter goes on to the confirmation; Esc cancels.", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#reason-text", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class WorkingScreen(ModalScreen[None]):
    """While an operation runs: what it does and how far it is."""

    DEFAULT_CSS = MODAL_CSS

    def __init__(self, label: str, total: int) -> None:
        super().__init__()
        self.label = label
        self.total = total

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"{self.label}...")
            yield ProgressBar(total=max(self.total, 1), show_eta=False, id="progress")

    def advance(self, done: int, total: int) -> None:
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(total, 1), progress=done)


class MessageScreen(ModalScreen[None]):
    """A result or an error: one paragraph the tool wrote (data in it already inert)."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="message"):
            yield Label(Text(self.title_text, style="bold"))
            yield Static(plain(self.body), id="body")
            yield Label("Enter or Esc to go back.", classes="hint")


class ClientScreen(ModalScreen[str | None]):
    """One client's file, as `show` prints it; `e` edits it."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Back"),
        Binding("q", "dismiss(None)", "Back", show=False),
        Binding("e", "dismiss('edit')", "Edit"),
    ]

    def __init__(self, parts: list[RenderableType]) -> None:
        super().__init__()
        self.parts = parts

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="file"):
            yield Static(Group(*self.parts), id="show")
            yield Label("e edits this client; Esc goes back.", classes="hint")


# (field, label) in the order `edit` lists them.
EDIT_FIELDS = (
    ("email", "e-mail"),
    ("first_name", "first name"),
    ("last_name", "last name"),
    ("phone", "phone"),
)


class EditScreen(ModalScreen[dict[str, str] | None]):
    """A client's e-mail, names and phone, to change; returns what the boxes hold.

    The boxes start with the values as `visible` shows them, so a stored control
    character is never written to the terminal; a box left as it was keeps its field.
    """

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, detail: ClientDetail) -> None:
        super().__init__()
        self.detail = detail

    def shown(self) -> dict[str, str]:
        summary = self.detail.summary
        values = {
            "email": summary.email,
            "first_name": summary.first_name,
            "last_name": summary.last_name,
            "phone": self.detail.phone or "",
        }
        return {name: visible(value) for name, value in values.items()}

    def compose(self) -> ComposeResult:
        shown = self.shown()
        with Vertical(id="edit"):
            yield Label(f"Edit client {self.detail.summary.id}")
            for name, label in EDIT_FIELDS:
                yield Label(label)
                yield Input(value=shown[name], id=name, select_on_focus=False)
            yield Label("Enter on the last box or Ctrl+S saves; Esc cancels.", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == EDIT_FIELDS[-1][0]:
            self.action_save()
        else:
            self.focus_next()

    def action_save(self) -> None:
        self.dismiss({name: self.query_one(f"#{name}", Input).value for name, _ in EDIT_FIELDS})


class HelpScreen(ModalScreen[None]):
    """The keys."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.pop_screen", "Back", show=False),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, meaning in self.keys:
            table.add_row(Text(key), Text(meaning))
        with VerticalScroll():
            yield Label(Text("Keys", style="bold"))
            yield Static(table)
            yield Label("Esc goes back.", classes="hint")
