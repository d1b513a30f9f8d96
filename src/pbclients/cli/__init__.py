"""The command-line adapter: parse, confirm, call one domain function, render, exit."""
