"""A Pygments lexer for spec files (``pygmentize -l flowdsl FILE``; ``.flow`` files by name).

Registered under the ``pygments.lexers`` entry point in pyproject.toml, so Sphinx, MkDocs and
anything else that asks Pygments for ``flowdsl`` (or a ``*.flow`` file) gets it once flowdsl is
installed (Pygments itself: the ``editor`` extra). The words come from the kind registry through
:func:`flowdsl.highlight.vocabulary`; tokens:

    comments            Comment.Single          ``# ...``
    keywords            Keyword                 ``flow block input context dequantize prior objective train repeat``
    true / false        Keyword.Constant
    block / flow names  Name.Function           after ``block`` / ``flow``
    layer kinds         Name.Builtin            ``actnorm``, ``coupling``, ``rg``, ...
    priors, objectives  Name.Class              ``gaussian``, ``mle``, ``fdrl``, ...
    parts, input kinds  Keyword.Type            ``disentangler``, ``image``, ``label`` (input and context kinds)
    argument names      Name.Attribute          ``hidden`` in ``hidden=64``
    ``$params``         Name.Variable
    numbers             Number.Integer / Number.Float
    strings             String.Double
    other names         Name (enumeration values, block calls)
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from flowdsl.highlight import COMMENT, FLOAT, NAME, NUMBER, STRING, vocabulary

__all__ = ["FlowDSLLexer"]

_V = vocabulary()


class FlowDSLLexer(RegexLexer):
    """flowdsl spec files (``*.flow``)."""

    name = "flowdsl"
    aliases = ["flowdsl"]
    filenames = ["*.flow"]
    mimetypes = ["text/x-flowdsl"]
    url = "https://github.com/flowdsl/flowdsl"

    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (COMMENT, Comment.Single),
            (STRING, String.Double),
            (rf"\b(flow|block)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (rf"(\$)(\s*)({NAME})", bygroups(Name.Variable, Whitespace, Name.Variable)),
            (words(_V["constants"], suffix=r"\b"), Keyword.Constant),
            # a keyword written as an argument name (``coupling(context=false)``) is an argument name
            (words(_V["keywords"], suffix=r"\b(?!\s*=)"), Keyword),
            # an enumeration value is a plain name even where it spells a kind (``net=conv``)
            (
                rf"({NAME})(\s*)(=)(\s*)(?!(?:true|false)\b)({NAME})\b(?!\s*\()",
                bygroups(Name.Attribute, Whitespace, Operator, Whitespace, Name),
            ),
            (rf"({NAME})(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (words(_V["layers"], suffix=r"\b"), Name.Builtin),
            (words(_V["priors"] + _V["objectives"], suffix=r"\b"), Name.Class),
            (words(_V["parts"] + _V["inputs"], suffix=r"\b"), Keyword.Type),
            (FLOAT, Number.Float),
            (NUMBER, Number.Integer),
            (NAME, Name),
            (r"[{}()\[\],]", Punctuation),
            (r"=", Operator),
            (r".", Text),
        ]
    }
