"""The language server's wiring (pygls): document events, requests and settings.

Every open or change of a document runs the checker on its text once per version
(:class:`~flowdsl.lsp.analysis.DocumentStore`) and publishes its diagnostics; the requests read
that analysis (hover, definition, references, symbols, inlay hints) or the raw text (completion,
which must work on a line being typed, and formatting, through ``flowdsl fmt``'s formatter).

Settings (``initializationOptions`` or ``workspace/didChangeConfiguration`` under ``flowdsl``):
``inlayHints`` (default true) turns the shape hints after each layer on or off.

The server imports neither torch nor ``flowdsl.runtime`` (``flowdsl lsp`` is a core command).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer

from flowdsl.lsp.analysis import Analysis, DocumentStore, from_lsp_col
from flowdsl.version import __version__

__all__ = ["FlowServer", "create_server", "serve"]

COMPLETION_TRIGGERS = ["(", ",", "=", "$", " "]


class FlowServer(LanguageServer):
    """pygls server holding the analyses of open documents and the settings."""

    def __init__(self) -> None:
        super().__init__("flowdsl", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Incremental)
        self.store = DocumentStore()
        self.inlay_hints_enabled = True

    def filename(self, uri: str) -> str:
        """The path of a ``file:`` URI (the name diagnostics and the formatter are given)."""
        u = urlparse(uri)
        return unquote(u.path) if u.scheme == "file" else uri

    def analysis(self, uri: str) -> Analysis:
        doc = self.workspace.get_text_document(uri)
        return self.store.analysis(uri, doc.source, self.filename(uri), doc.version)

    def publish(self, uri: str) -> None:
        from flowdsl.lsp.convert import diagnostics

        an = self.analysis(uri)
        self.text_document_publish_diagnostics(
            T.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics(an), version=an.version)
        )

    def apply_settings(self, settings: Any) -> None:
        if isinstance(settings, dict):
            settings = settings.get("flowdsl", settings)
            if isinstance(settings, dict) and "inlayHints" in settings:
                self.inlay_hints_enabled = bool(settings["inlayHints"])

    def tree(self, uri: str):
        """The newest analysis of ``uri`` that has a syntax tree (the current one when the text
        parses, else the last good one), or None; analyses the current text first."""
        self.analysis(uri)
        return self.store.with_tree(uri)

    def char_position(self, uri: str, pos: T.Position) -> tuple[int, int]:
        """An LSP position as (0-based line, character column) of the document's text."""
        doc = self.workspace.get_text_document(uri)
        lines = doc.lines
        line = lines[pos.line].rstrip("\r\n") if pos.line < len(lines) else ""
        return pos.line, from_lsp_col(line, pos.character)


def create_server() -> FlowServer:
    server = FlowServer()

    @server.feature(T.INITIALIZE)
    def initialize(ls: FlowServer, params: T.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)

    @server.feature(T.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: FlowServer, params: T.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(T.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: FlowServer, params: T.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: FlowServer, params: T.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: FlowServer, params: T.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: FlowServer, params: T.DidCloseTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.store.close(uri)
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(T.TEXT_DOCUMENT_HOVER)
    def hover(ls: FlowServer, params: T.HoverParams) -> T.Hover | None:
        from flowdsl.lsp.hover import hover as hover_at

        uri = params.text_document.uri
        an = ls.tree(uri)
        if an is None:
            return None
        line0, col0 = ls.char_position(uri, params.position)
        return hover_at(an, line0, col0)

    @server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=COMPLETION_TRIGGERS))
    def completion(ls: FlowServer, params: T.CompletionParams) -> T.CompletionList:
        from flowdsl.lsp.completion import complete

        uri = params.text_document.uri
        line0, col0 = ls.char_position(uri, params.position)
        items = complete(ls.workspace.get_text_document(uri).source, line0, col0)
        return T.CompletionList(is_incomplete=False, items=items)

    @server.feature(T.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: FlowServer, params: T.DefinitionParams) -> T.Location | None:
        from flowdsl.lsp.symbols import definition as definition_at

        uri = params.text_document.uri
        an = ls.tree(uri)
        if an is None:
            return None
        line0, col0 = ls.char_position(uri, params.position)
        return definition_at(an, uri, line0, col0)

    @server.feature(T.TEXT_DOCUMENT_REFERENCES)
    def references(ls: FlowServer, params: T.ReferenceParams) -> list[T.Location]:
        from flowdsl.lsp.symbols import references as references_at

        uri = params.text_document.uri
        an = ls.tree(uri)
        if an is None:
            return []
        line0, col0 = ls.char_position(uri, params.position)
        return references_at(an, uri, line0, col0, params.context.include_declaration)

    @server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def document_symbol(ls: FlowServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
        from flowdsl.lsp.symbols import document_symbols

        uri = params.text_document.uri
        an = ls.tree(uri)
        return document_symbols(an) if an is not None else []

    @server.feature(T.TEXT_DOCUMENT_INLAY_HINT)
    def inlay_hint(ls: FlowServer, params: T.InlayHintParams) -> list[T.InlayHint]:
        from flowdsl.lsp.symbols import inlay_hints

        if not ls.inlay_hints_enabled:
            return []
        uri = params.text_document.uri
        return inlay_hints(ls.analysis(uri), params.range)  # none while the text does not parse

    @server.feature(T.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: FlowServer, params: T.DocumentFormattingParams) -> list[T.TextEdit] | None:
        from flowdsl.lsp.formatting import format_edits

        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        return format_edits(doc.source, ls.filename(uri))

    return server


def _warm_up() -> None:
    """Import the compiler and build the parser while the client initialises (first diagnostics
    sooner); failures are left to the first real analysis to report."""
    try:
        from flowdsl.compiler.passes import run_pipeline  # noqa: F401
        from flowdsl.parser import _parser

        _parser()
    except Exception:  # pragma: no cover - reported by the analysis itself
        pass


def serve() -> int:
    """Run the server over stdin/stdout until the client sends ``exit``."""
    logging.basicConfig(level=logging.WARNING)
    threading.Thread(target=_warm_up, daemon=True, name="flowdsl-lsp-warmup").start()
    create_server().start_io()
    return 0
