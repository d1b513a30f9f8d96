"""`pbclients browse`: the roster full-screen, on the same domain functions as the commands.

Reads run in worker threads (the UI never waits on the database) and each action is the
command's own operation: `preview`, the command's confirmation text, then `apply` in one
transaction with the same audit events, and the command's summary with its undo hint.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, Select, Static, Tab, Tabs

from pbclients.cli.browse.actions import ACTIONS, Picked, selection_of
from pbclients.cli.browse.screens import (
    ClientScreen,
    ConfirmScreen,
    EditScreen,
    HelpScreen,
    MessageScreen,
    ReasonScreen,
    WorkingScreen,
)
from pbclients.cli.browse.table import ClientTable
from pbclients.cli.render import literal, plain, visible
from pbclients.errors import PbClientsError
from pbclients.policy import Status

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from pbclients.cli.common import AppState
    from pbclients.cli.run import Apply, Wording
    from pbclients.operation import Plan
    from pbclients.readdb import Database
    from pbclients.roster_view import ClientDetail, ClientFilter

# (tab id, label, statuses): the filters of the practice's My Clients page.
TABS: tuple[tuple[str, str, tuple[Status, ...]], ...] = (
    ("active", "Active", (Status.ACTIVE,)),
    ("deactivated", "Deactivated", (Status.DEACTIVATED,)),
    ("deleted", "Deleted", (Status.DELETED,)),
    ("all", "All", tuple(Status)),
)
# How long typing pauses before the search runs (Enter runs it at once).
SEARCH_DELAY = 0.4


def keys() -> list[tuple[str, str]]:
    """Every key of `browse`, for the help screen and the README."""
    return [
        ("Up/Down, PgUp/PgDn, Home/End", "move in the table"),
        ("Left/Right", "previous / next status tab"),
        ("/", "search by name or e-mail (Enter runs it, Esc back to the table)"),
        ("p", "pick a program"),
        ("Space", "select or unselect the client (Select Multiple)"),
        ("a", "select every match of the current filter"),
        ("Esc", "clear the selection"),
        *((action.key, f"{action.label} the selection (as `pbclients {action.command}`)")
          for action in ACTIONS),
        ("Enter", "show the client's file (as `pbclients show`)"),
        ("e", "edit the client (as `pbclients edit`)"),
        ("?", "this list of keys"),
        ("q", "quit (from the table); Ctrl+Q quits from anywhere"),
    ]  # fmt: skip


class BrowseApp(App[None]):
    TITLE = "pbclients browse"
    # Every command is a key on the screen (see `keys`); a palette would be a second way.
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #filters { height: auto; }
    #search { width: 1fr; }
    #program { width: 40; }
    #status { height: 1; padding: 0 1; background: $panel; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "keys", "Keys"),
        *(Binding(action.key, f"act('{action.key}')", action.label) for action in ACTIONS),
        Binding("e", "edit", "Edit"),
        Binding("slash", "focus_search", "Search"),
        Binding("p", "focus_program", "Program", show=False),
        Binding("left", "tab(-1)", "Previous tab", show=False),
        Binding("right", "tab(1)", "Next tab", show=False),
    ]

    def __init__(self, state: AppState, database: Database, programs: list[str]) -> None:
        super().__init__()
        from pbclients import clock

        self.state = state
        self.database = database
        self.programs = programs
        self.now = clock.now()
        self.picked = Picked()
        self._search_timer: Any = None

    # --- layout and filters ----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Tabs(*(Tab(label, id=tab_id) for tab_id, label, _ in TABS), id="tabs")
        with Horizontal(id="filters"):
            yield Input(placeholder="Search name or e-mail  (/)", id="search")
            yield Select(
                [(literal(name), name) for name in self.programs],
                prompt="All programs  (p)",
                id="program",
            )
        from pbclients.roster_view import ClientFilter

        first = ClientFilter(TABS[0][2])
        yield ClientTable(self.database, first, self.picked, self.now, id="table")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.show_status()

    @cached_property
    def engine(self) -> Engine:
        """The engine for the actions, opened (SQLAlchemy imported) when one first runs."""
        return self.state.engine()

    @property
    def table(self) -> ClientTable:
        return self.query_one("#table", ClientTable)

    def current_filter(self) -> ClientFilter:
        from pbclients.roster_view import ClientFilter

        active = self.query_one("#tabs", Tabs).active
        statuses = next((s for tab_id, _, s in TABS if tab_id == active), TABS[0][2])
        search = self.query_one("#search", Input).value.strip() or None
        chosen = self.query_one("#program", Select).value
        return ClientFilter(statuses, search, chosen if isinstance(chosen, str) else None)

    def refilter(self) -> None:
        where = self.current_filter()
        if where == self.table.where:
            return
        if self.picked.every is not None:
            # "Every match" means every match of one filter; under another it would be a guess.
            self.picked.clear()
            self.notify("Selection cleared: it was every match of the previous filter.")
        self.table.reset(where)
        self.show_status()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if self.query("#table"):  # the first tab is activated before the table exists
            self.refilter()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.refilter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "search":
            return
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY, self.refilter)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "search":
            self.refilter()
            self.table.focus()

    def on_key(self, event: Any) -> None:
        # Esc in the search box or the program picker goes back to the table.
        if event.key == "escape" and self.focused is not None and self.focused.id == "search":
            self.table.focus()
            event.stop()

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_focus_program(self) -> None:
        self.query_one("#program", Select).focus()

    def action_tab(self, step: int) -> None:
        tabs = self.query_one("#tabs", Tabs)
        tabs.action_next_tab() if step > 0 else tabs.action_previous_tab()

    def action_keys(self) -> None:
        self.push_screen(HelpScreen(keys()))

    # --- the status line -------------------------------------------------------------------

    def show_status(self) -> None:
        table = self.table
        tab = next(label for tab_id, label, s in TABS if s == table.where.statuses)
        total = table.total
        matches = (
            "counting..." if total is None else f"{total:,} {'match' if total == 1 else 'matches'}"
        )
        line = f"{tab}: {matches}"
        if table.where.search:
            line += f" for '{visible(table.where.search)}'"
        if table.where.program:
            line += f" in {visible(table.where.program)}"
        picked = self.picked.count()
        line += f"  |  {picked:,} selected"
        if self.picked.every is not None:
            line += " (every match)"
        self.query_one("#status", Static).update(plain(line))

    def on_client_table_counted(self, event: ClientTable.Counted) -> None:
        self.show_status()

    def on_client_table_picks(self, event: ClientTable.Picks) -> None:
        self.show_status()

    def on_client_table_failed(self, event: ClientTable.Failed) -> None:
        self.failed(event.error)

    # --- running domain work off the UI thread ---------------------------------------------

    def in_thread(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run `work` in a thread and `then(result)` back here; errors become a message."""

        def run() -> None:
            try:
                result = work()
            except Exception as error:
                self.call_from_thread(self.failed, error)
                return
            self.call_from_thread(then, result)

        self.run_worker(run, thread=True, group="work")

    def failed(self, error: BaseException) -> None:
        if isinstance(self.screen, WorkingScreen):
            self.pop_screen()
        if isinstance(error, PbClientsError):
            self.push_screen(MessageScreen("Nothing was changed", f"Error: {error}"))
            return
        if self.state.debug:
            raise error
        first_line = next(iter(str(error).splitlines()), "").rstrip(". ")
        self.push_screen(
            MessageScreen(
                "Unexpected error",
                f"Unexpected error: {type(error).__name__}: {first_line}. "
                "Run browse again with --debug for details.",
            )
        )

    # --- actions on the selection ----------------------------------------------------------

    def action_act(self, key: str) -> None:
        action = next(a for a in ACTIONS if a.key == key)
        if self.picked.count() == 0:
            self.notify("Select clients first: Space selects a row, a selects every match.")
            return
        picked = self.picked

        def start(reason: str | None) -> None:
            def plan() -> Plan[Any]:
                selection = selection_of(picked.client_ids(self.database))
                return action.preview(self.engine, selection, reason)

            self.in_thread(
                plan, lambda found: self.confirm(found, action.apply(), action.wording(), reason)
            )

        if not action.asks_reason:
            start(None)
            return

        def reasoned(reason: str | None) -> None:
            if reason:
                start(reason)
            else:
                self.notify("No reason given; nothing was changed.")

        self.push_screen(ReasonScreen(f"{action.label}: the reason (a case or request number)"),
                         reasoned)  # fmt: skip

    def confirm(
        self, plan: Plan[Any], apply: Apply[Any], wording: Wording[Any], reason: str | None = None
    ) -> None:
        """As `carry_out`: nothing to do is said, else the question, then apply."""
        if plan.changing == 0:
            self.push_screen(MessageScreen("Nothing to do", wording.summary(plan, False)))
            return
        typed = plan.changing if wording.typed and plan.changing > 1 else None

        def answered(agreed: bool | None) -> None:
            if agreed:
                self.carry_out(plan, apply, wording, reason)
            else:
                self.notify("Not confirmed; nothing was changed.")

        self.push_screen(ConfirmScreen(wording.question(plan), typed), answered)

    def carry_out(
        self, plan: Plan[Any], apply: Apply[Any], wording: Wording[Any], reason: str | None
    ) -> None:
        working = WorkingScreen(wording.progress_label, plan.changing)
        self.push_screen(working)

        def progress(done: int, total: int) -> None:
            self.call_from_thread(working.advance, done, total)

        def run() -> Any:
            return apply(self.engine, plan, self.state.change(reason), on_progress=progress)

        self.in_thread(run, lambda batch: self.done(wording.summary(batch, False)))

    def done(self, summary: str) -> None:
        if isinstance(self.screen, WorkingScreen):
            self.pop_screen()
        self.picked.clear()
        where = self.table.where
        self.table.reset(where)
        self.show_status()
        self.push_screen(MessageScreen("Done", summary))

    # --- one client: show and edit ---------------------------------------------------------

    def on_client_table_open(self, event: ClientTable.Open) -> None:
        self.open_client(event.client.id)

    def _detail(self, client_id: int) -> Callable[[], ClientDetail]:
        from pbclients.roster_view import client_detail

        return lambda: client_detail(self.database, str(client_id), self.now)

    def open_client(self, client_id: int) -> None:
        from pbclients.cli.roster import show_renderables

        def shown(detail: ClientDetail) -> None:
            def closed(choice: str | None) -> None:
                if choice == "edit":
                    self.edit_client(detail)

            self.push_screen(ClientScreen(show_renderables(detail, self.now)), closed)

        self.in_thread(self._detail(client_id), shown)

    def action_edit(self) -> None:
        client = self.table.current()
        if client is not None:
            self.in_thread(self._detail(client.id), self.edit_client)

    def edit_client(self, detail: ClientDetail) -> None:
        screen = EditScreen(detail)

        def edited(boxes: dict[str, str] | None) -> None:
            if boxes is not None:
                self.in_thread(lambda: self._plan_edit(detail, screen.shown(), boxes), self._edit)

        self.push_screen(screen, edited)

    def _plan_edit(
        self, detail: ClientDetail, shown: dict[str, str], boxes: dict[str, str]
    ) -> Plan[Any] | None:
        from pbclients import editing
        from pbclients.cli.editing import edit_values

        # A box left as shown keeps its field (its stored value may hold what `visible` escaped).
        new = {name: value for name, value in boxes.items() if value != shown[name]}
        phone = new.get("phone")
        no_phone = phone is not None and not phone.strip()
        values = edit_values(
            new.get("email"), new.get("first_name"), new.get("last_name"),
            None if no_phone else phone, no_phone,
        )  # fmt: skip
        if not values:
            return None
        edit = editing.ClientEdit(str(detail.summary.id), values)
        return editing.preview(self.engine, [edit])

    def _edit(self, plan: Plan[Any] | None) -> None:
        from pbclients import editing
        from pbclients.cli.editing import edit_wording

        if plan is None:
            self.notify("Nothing to edit: no box was changed.")
            return
        self.confirm(plan, editing.apply, edit_wording())
