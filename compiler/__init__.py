"""flowdsl.compiler: the bijector-graph IR, the kind registry and the named passes."""
