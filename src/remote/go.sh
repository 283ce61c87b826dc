# go: waits until dm-patch says `go` on stdin before the next step of an instance's roll (see
# `Remote::converse_roll`): a dm-patch that is gone (stdin at its end), or that says anything
# else, stops the command there, and the instance stays where the step before left it.
IFS= read -r said && [ "$said" = go ]
