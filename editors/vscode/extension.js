// flowdsl for VS Code: the language (.flow), its TextMate grammar, and a client that starts
// `flowdsl lsp` (LSP over stdin/stdout) for every .flow file. Not published: install from this
// folder (see README.md next to this file).
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

/** The server command from the settings: `flowdsl.server.command` + `flowdsl.server.args`. */
function serverOptions() {
  const config = vscode.workspace.getConfiguration("flowdsl");
  const command = config.get("server.command", "flowdsl");
  const args = config.get("server.args", ["lsp"]);
  const run = { command, args, transport: TransportKind.stdio };
  return { run, debug: run };
}

function activate(context) {
  const config = vscode.workspace.getConfiguration("flowdsl");
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "flowdsl" },
      { scheme: "untitled", language: "flowdsl" },
    ],
    initializationOptions: { flowdsl: { inlayHints: config.get("inlayHints", true) } },
    synchronize: { configurationSection: "flowdsl" },
  };
  client = new LanguageClient("flowdsl", "flowdsl language server", serverOptions(), clientOptions);
  context.subscriptions.push({ dispose: () => (client ? client.stop() : undefined) });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate, serverOptions };
