"""One module per Kapso API domain over a shared HTTP core."""
