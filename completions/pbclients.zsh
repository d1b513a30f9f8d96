
#compdef pbclients

_pbclients_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _PBCLIENTS_COMPLETE=complete_zsh pbclients)
}

compdef _pbclients_completion pbclients

