"""Exact reversal of SGD with momentum (Maclaurin, Duvenaud & Adams 2015): hypergradients without a
stored trajectory."""
