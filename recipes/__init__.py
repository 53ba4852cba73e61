"""The recipes shipped with t2ictl, as package data: `t2ictl recipes` lists them from any working directory."""
