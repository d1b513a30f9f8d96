"""The client table of `browse`: a window onto the roster, filled a page at a time.

Only the pages around what is on screen are held (a few thousand clients at most), so
scrolling through a million clients costs the same memory as scrolling through ten. A
page that follows a loaded one continues from its last id (an index seek); a jump (End,
the scrollbar) starts at an offset. Every cell goes through `visible`, then into a rich
`Text`: a name cannot carry markup or a terminal control onto the screen.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from pbclients.cli.browse.actions import Picked
from pbclients.cli.render import visible
from pbclients.clock import iso
from pbclients.policy import Status

if TYPE_CHECKING:
    from pbclients.readdb import Database
    from pbclients.roster_view import ClientFilter, ClientSummary

PAGE_ROWS = 100
# Pages kept around the cursor: 3,000 clients, whatever the roster's size.
KEPT_PAGES = 30
HEADERS = ("", "id", "name", "e-mail", "status", "programs", "last activity", "purge in")


def column_widths(width: int) -> list[int]:
    """Cell widths for a table `width` cells wide; names, e-mails and programs share the rest."""
    fixed = [4, 9, 0, 0, 12, 0, 14, 9]
    rest = max(width - sum(fixed), 30)
    name, email = rest * 3 // 10, rest * 4 // 10
    fixed[2], fixed[3], fixed[5] = name, email, rest - name - email
    return fixed


def row_cells(client: ClientSummary, picked: bool, now: datetime) -> list[str]:
    """One client's cells, as text safe to show (see `visible`)."""
    days = client.days_until_purge(now) if client.status == Status.DELETED else None
    return [
        "[x]" if picked else "[ ]",
        str(client.id),
        visible(f"{client.first_name} {client.last_name}"),
        visible(client.email),
        visible(client.status),
        visible(", ".join(client.programs)),
        (iso(client.last_activity) or "")[:10],
        "" if days is None else f"{days} d",
    ]


def line_text(cells: list[str], widths: list[int]) -> Text:
    """Cells laid out in their columns, each cut with an ellipsis to leave one space."""
    line = Text(no_wrap=True, end="")
    for cell, width in zip(cells, widths, strict=True):
        part = Text(cell, no_wrap=True, end="")
        part.truncate(max(width - 1, 1), overflow="ellipsis")
        part.pad_right(width - part.cell_len)
        line.append_text(part)
    return line


class ClientTable(ScrollView, can_focus=True):
    """The roster as rows; line 0 is the header, which stays put."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("space", "pick", "Select"),
        Binding("a", "select_all", "All"),
        Binding("escape", "clear", "Clear", show=False),
        Binding("enter", "open", "Show"),
        Binding("q", "app.quit", "Quit"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "client-table--header",
        "client-table--cursor",
        "client-table--picked",
    }
    DEFAULT_CSS = """
    ClientTable { height: 1fr; overflow-x: hidden; }
    ClientTable > .client-table--header { text-style: bold; background: $panel; }
    ClientTable > .client-table--picked { text-style: bold; }
    ClientTable > .client-table--cursor { background: $block-cursor-blurred-background; }
    ClientTable:focus > .client-table--cursor {
        background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold;
    }
    """

    class Counted(Message):
        """The number of matches of the current filter is known."""

        def __init__(self, total: int) -> None:
            super().__init__()
            self.total = total

    class Open(Message):
        """Enter on a row: show this client's file."""

        def __init__(self, client: ClientSummary) -> None:
            super().__init__()
            self.client = client

    class Failed(Message):
        """A read failed; the app says so."""

        def __init__(self, error: BaseException) -> None:
            super().__init__()
            self.error = error

    class Picks(Message):
        """The selection changed."""

    def __init__(
        self, database: Database, where: ClientFilter, picked: Picked, now: datetime, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.database = database
        self.where = where
        self.picked = picked
        self.now = now
        self.cursor = 0
        self.total: int | None = None
        self._generation = 0
        self._pages: OrderedDict[int, list[ClientSummary]] = OrderedDict()
        self._loading: set[int] = set()

    # --- data ------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        if self.total is not None:
            return self.total
        first = self._pages.get(0)
        return len(first) if first is not None else 0

    def on_mount(self) -> None:
        self.reset(self.where)

    def reset(self, where: ClientFilter) -> None:
        """Show the matches of `where` from the top; pages of the old filter are dropped."""
        self.where = where
        self._generation += 1
        self._pages.clear()
        self._loading.clear()
        self.total = None
        self.cursor = 0
        self.scroll_to(y=0, animate=False, immediate=True)
        self._resize()
        self._want(0)
        generation = self._generation
        self.run_worker(
            lambda: self._count(generation, where), thread=True, group="count", exclusive=True
        )

    def _count(self, generation: int, where: ClientFilter) -> None:
        from pbclients.roster_view import count_clients

        try:
            total = count_clients(self.database, where)
        except Exception as error:
            self.app.call_from_thread(self.post_message, self.Failed(error))
            return
        self.app.call_from_thread(self._counted, generation, total)

    def _counted(self, generation: int, total: int) -> None:
        if generation != self._generation:
            return
        self.total = total
        self.cursor = min(self.cursor, max(total - 1, 0))
        self._resize()
        self.refresh()
        self.post_message(self.Counted(total))

    def _want(self, page_no: int) -> None:
        if page_no in self._pages or page_no in self._loading or page_no < 0:
            return
        self._loading.add(page_no)
        before = self._pages.get(page_no - 1)
        after_id = before[-1].id if before else (0 if page_no == 0 else None)
        generation, where = self._generation, self.where
        self.run_worker(
            lambda: self._load(generation, where, page_no, after_id),
            thread=True,
            group="pages",
        )

    def _load(
        self, generation: int, where: ClientFilter, page_no: int, after_id: int | None
    ) -> None:
        from pbclients.roster_view import client_page

        try:
            rows = client_page(
                self.database, where, offset=page_no * PAGE_ROWS, after_id=after_id,
                limit=PAGE_ROWS, activity_at=self.now,
            )  # fmt: skip
        except Exception as error:
            self.app.call_from_thread(self.post_message, self.Failed(error))
            return
        self.app.call_from_thread(self._loaded, generation, page_no, rows)

    def _loaded(self, generation: int, page_no: int, rows: list[ClientSummary]) -> None:
        if generation != self._generation:
            return
        self._loading.discard(page_no)
        self._pages[page_no] = rows
        # Keep the pages nearest the cursor; a far one is read again if it is needed again.
        here = self.cursor // PAGE_ROWS
        while len(self._pages) > KEPT_PAGES:
            farthest = max(self._pages, key=lambda n: abs(n - here))
            del self._pages[farthest]
        if self.total is None:
            self._resize()
        self.refresh()

    @property
    def loaded(self) -> bool:
        """Whether the count and the rows on screen are in (tests wait on it)."""
        if self.total is None:
            return False
        top = int(self.scroll_offset.y)
        bottom = min(top + self.size.height, self.rows)
        pages = {i // PAGE_ROWS for i in range(top, bottom)}
        return all(page in self._pages for page in pages)

    def client_at(self, index: int) -> ClientSummary | None:
        page = self._pages.get(index // PAGE_ROWS)
        if page is None or index % PAGE_ROWS >= len(page):
            return None
        return page[index % PAGE_ROWS]

    def current(self) -> ClientSummary | None:
        return self.client_at(self.cursor) if self.rows else None

    # --- drawing ---------------------------------------------------------------------------

    def _resize(self) -> None:
        # One more line than rows: the header takes line 0 of the view.
        self.virtual_size = Size(self.size.width, self.rows + 1)

    def on_resize(self, event: events.Resize) -> None:
        self._resize()

    def render_line(self, y: int) -> Strip:
        # The scrollbar takes its own columns: rows are laid out in what is left.
        width = self.scrollable_content_region.width
        widths = column_widths(width)
        if y == 0:
            style = self.get_component_rich_style("client-table--header")
            return self._strip(line_text(list(HEADERS), widths), width, style)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self.rows:
            return Strip.blank(width, self.rich_style)
        client = self.client_at(index)
        if client is None:
            self.call_later(self._want, index // PAGE_ROWS)
            return self._strip(Text("  ..."), width, self.rich_style)
        picked = self.picked.has(client.id)
        style = self.rich_style
        if picked:
            style += self.get_component_rich_style("client-table--picked")
        if index == self.cursor:
            style += self.get_component_rich_style("client-table--cursor")
        return self._strip(line_text(row_cells(client, picked, self.now), widths), width, style)

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        segments = [
            Segment(segment.text, style + segment.style if segment.style else style)
            for segment in text.render(self.app.console)
        ]
        return Strip(segments).adjust_cell_length(width, style)

    # --- keys ------------------------------------------------------------------------------

    def _show_cursor(self) -> None:
        visible_rows = max(self.size.height - 1, 1)
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible_rows:
            self.scroll_to(y=self.cursor - visible_rows + 1, animate=False, immediate=True)
        self.refresh()

    def _move_to(self, index: int) -> None:
        self.cursor = max(0, min(index, self.rows - 1))
        self._show_cursor()

    def action_move(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, step: int) -> None:
        self._move_to(self.cursor + step * max(self.size.height - 2, 1))

    def action_edge(self, end: int) -> None:
        self._move_to(self.rows - 1 if end else 0)

    def action_pick(self) -> None:
        client = self.current()
        if client is None:
            return
        self.picked.toggle(client.id)
        self.post_message(self.Picks())
        self._move_to(self.cursor + 1)

    def action_select_all(self) -> None:
        if self.total is None:
            self.notify("Still counting the matches; press a again in a moment.")
            return
        self.picked.select_all(self.where, self.total)
        self.post_message(self.Picks())
        self.refresh()

    def action_clear(self) -> None:
        self.picked.clear()
        self.post_message(self.Picks())
        self.refresh()

    def action_open(self) -> None:
        client = self.current()
        if client is not None:
            self.post_message(self.Open(client))

    def on_click(self, event: events.Click) -> None:
        # The mouse is a bonus: a click on a row moves the cursor there.
        if event.y >= 1:
            self._move_to(int(self.scroll_offset.y) + event.y - 1)
