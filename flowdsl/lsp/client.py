"""A blocking LSP client session over stdio (pygls's ``LanguageClient`` in a background event
loop), for the tests and the latency benchmark: it starts ``flowdsl lsp`` in a subprocess and
drives it with real JSON-RPC messages.

    with LspSession() as s:
        s.open("file:///x.flow", text)
        diags = s.wait_diagnostics("file:///x.flow", version=1)
        s.hover("file:///x.flow", line0, char)
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, Sequence

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

__all__ = ["LspSession", "DEFAULT_COMMAND"]

DEFAULT_COMMAND = (sys.executable, "-m", "flowdsl", "lsp")


class LspSession:
    """One server process and an initialised client; every call waits at most ``timeout`` s.

    ``diagnostics[uri]`` lists ``(version, diagnostics, monotonic time received)`` in arrival
    order; ``started`` is the monotonic time just before the process was spawned.
    """

    def __init__(
        self,
        command: Sequence[str] = DEFAULT_COMMAND,
        init_options: Any = None,
        timeout: float = 120.0,
        env: dict | None = None,
    ) -> None:
        self.timeout = timeout
        self.diagnostics: dict[str, list[tuple[int | None, list[T.Diagnostic], float]]] = {}
        self._cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="lsp-client")
        self._thread.start()
        self.client: LanguageClient = self._run(self._make_client())
        self.started = time.monotonic()
        kw = {"env": env} if env is not None else {}
        self._run(self.client.start_io(command[0], *command[1:], **kw))
        self.init_result = self._run(
            self.client.initialize_async(
                T.InitializeParams(
                    capabilities=T.ClientCapabilities(), process_id=None, initialization_options=init_options
                )
            )
        )
        self._call(self.client.initialized, T.InitializedParams())

    async def _make_client(self) -> LanguageClient:
        client = LanguageClient("flowdsl-client", "1")

        @client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(params: T.PublishDiagnosticsParams) -> None:
            with self._cond:
                self.diagnostics.setdefault(params.uri, []).append(
                    (params.version, list(params.diagnostics), time.monotonic())
                )
                self._cond.notify_all()

        return client

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def _call(self, fn, *args) -> None:
        async def call():
            fn(*args)

        self._run(call())

    # -- documents ----------------------------------------------------------------------
    def open(self, uri: str, text: str, version: int = 1) -> None:
        doc = T.TextDocumentItem(uri=uri, language_id="flowdsl", version=version, text=text)
        self._call(self.client.text_document_did_open, T.DidOpenTextDocumentParams(text_document=doc))

    def change(self, uri: str, text: str, version: int) -> None:
        """Replace the whole text (a full-document change event)."""
        params = T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[T.TextDocumentContentChangeWholeDocument(text=text)],
        )
        self._call(self.client.text_document_did_change, params)

    def edit(self, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """An incremental change: replace the range (0-based line, character) ``start``-``end``."""
        rng = T.Range(start=T.Position(*start), end=T.Position(*end))
        params = T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[T.TextDocumentContentChangePartial(range=rng, text=text)],
        )
        self._call(self.client.text_document_did_change, params)

    def wait_diagnostics(self, uri: str, version: int | None = None) -> list[T.Diagnostic]:
        """The diagnostics published for ``uri`` (for ``version`` when given), waiting for them."""
        return self.wait_diagnostics_timed(uri, version)[0]

    def wait_diagnostics_timed(self, uri: str, version: int | None = None) -> tuple[list[T.Diagnostic], float]:
        """As :meth:`wait_diagnostics`, with the monotonic time they arrived."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                for v, diags, t in reversed(self.diagnostics.get(uri, [])):
                    if version is None or v == version:
                        return diags, t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no diagnostics for {uri} version {version} in {self.timeout} s")
                self._cond.wait(left)

    # -- requests -----------------------------------------------------------------------
    @staticmethod
    def _doc(uri: str) -> T.TextDocumentIdentifier:
        return T.TextDocumentIdentifier(uri=uri)

    def hover(self, uri: str, line: int, character: int) -> T.Hover | None:
        p = T.HoverParams(text_document=self._doc(uri), position=T.Position(line, character))
        return self._run(self.client.text_document_hover_async(p))

    def completion(self, uri: str, line: int, character: int) -> list[T.CompletionItem]:
        p = T.CompletionParams(text_document=self._doc(uri), position=T.Position(line, character))
        res = self._run(self.client.text_document_completion_async(p))
        if res is None:
            return []
        return list(res.items) if isinstance(res, T.CompletionList) else list(res)

    def definition(self, uri: str, line: int, character: int):
        p = T.DefinitionParams(text_document=self._doc(uri), position=T.Position(line, character))
        return self._run(self.client.text_document_definition_async(p))

    def references(self, uri: str, line: int, character: int, declaration: bool = False):
        p = T.ReferenceParams(
            text_document=self._doc(uri),
            position=T.Position(line, character),
            context=T.ReferenceContext(include_declaration=declaration),
        )
        return self._run(self.client.text_document_references_async(p)) or []

    def document_symbols(self, uri: str):
        p = T.DocumentSymbolParams(text_document=self._doc(uri))
        return self._run(self.client.text_document_document_symbol_async(p)) or []

    def inlay_hints(self, uri: str, first_line: int, last_line: int):
        rng = T.Range(start=T.Position(first_line, 0), end=T.Position(last_line, 0))
        p = T.InlayHintParams(text_document=self._doc(uri), range=rng)
        return self._run(self.client.text_document_inlay_hint_async(p)) or []

    def formatting(self, uri: str):
        p = T.DocumentFormattingParams(
            text_document=self._doc(uri), options=T.FormattingOptions(tab_size=4, insert_spaces=True)
        )
        return self._run(self.client.text_document_formatting_async(p))

    def configure(self, settings: Any) -> None:
        self._call(
            self.client.workspace_did_change_configuration, T.DidChangeConfigurationParams(settings=settings)
        )

    # -- end ----------------------------------------------------------------------------
    def close(self) -> int | None:
        """Shut the server down (shutdown, exit) and return its exit code."""
        try:
            self._run(self.client.shutdown_async(None))
            self._call(self.client.exit, None)
            proc = self.client._server
            code = None
            if proc is not None:
                code = self._run(asyncio.wait_for(proc.wait(), self.timeout))
            self._run(self.client.stop())
            return code
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.timeout)

    def kill(self) -> None:
        proc = getattr(self.client, "_server", None)
        if proc is not None and proc.returncode is None:
            proc.kill()

    def __enter__(self) -> "LspSession":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        except Exception:
            self.kill()
            raise
