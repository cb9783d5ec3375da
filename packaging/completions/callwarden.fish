# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_callwarden_global_optspecs
    string join \n config= log-format= v/verbose h/help V/version
end

function __fish_callwarden_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_callwarden_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_callwarden_using_subcommand
    set -l cmd (__fish_callwarden_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c callwarden -n "__fish_callwarden_needs_command" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_needs_command" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_needs_command" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_needs_command" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "run" -d 'Run the daemon: poll, evaluate, enforce until SIGTERM/SIGINT'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "check" -d 'Validate the config and every policy file without calling the API'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "once" -d 'One full cycle: list, evaluate, hang up calls already past their deadline, print a summary'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "explain" -d 'Show every rule for one live call (or a saved call): matched or not, and why'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "calls" -d 'List live calls with age, matched rules and time left'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "pardon" -d 'Ask the running daemon to spare one call, for a while or for good'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "hangup" -d 'Ask the running daemon to end calls now, by UUID or with --match'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "test" -d 'Run the policy test cases (default: tests/ beside the policy directory)'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "cluster" -d 'With [ha]: members, each account\'s leader, epoch and lease expiry, pending intents'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "sim" -d 'Run the bundled Vobiz API simulator'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "demo" -d 'Start the simulator with sample calls and policies, enforce against it, and summarise'
complete -c callwarden -n "__fish_callwarden_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c callwarden -n "__fish_callwarden_using_subcommand run" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand run" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand run" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand run" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -l format -d 'Output: `text` (FILE:LINE:COL: error: MESSAGE, then a summary) or `json` (one JSON object per diagnostic per line, for CI)' -r -f -a "text\t'`FILE:LINE:COL: error: MESSAGE` lines, then a summary line'
json\t'One JSON object per diagnostic per line (JSON Lines), no summary: `{"file","line","column","severity","message"}`'"
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand check" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -l json -d 'Print the summary as JSON'
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand once" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -l call-json -d 'Explain a saved call detail (JSON as the API returns it) instead' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -l json -d 'Print JSON'
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand explain" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -l json -d 'Print JSON'
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand calls" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -l for -d 'How long to spare it (default: for good)' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand pardon" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l match -d 'Select the calls instead: FIELD=GLOB, as in [rule.match]; repeat a field for "any of", give several fields for "all of"' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l older-than -d 'With --match: only calls that started at least this long ago' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l limit -d 'With --match: at most this many calls per account, oldest first' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l reason -d 'Why the calls are ended (audited)' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l request-id -d 'An idempotency key: the daemon acts on one id once' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l yes -d 'End the calls a selector finds (without it, only show them)'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l force -d 'A selector is not held by the breaker'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l dry-run -d 'Audit what would happen, hang up nothing'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -l json -d 'Print the daemon\'s answer as JSON'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand hangup" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand test" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand test" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand test" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand test" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -l json -d 'Print JSON'
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand cluster" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l listen -d 'Address to listen on (port 0 picks a free port)' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l auth-id -d 'Auth id to accept (repeat for several accounts)' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l auth-token -d 'Auth token to accept, paired in order with --auth-id' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l calls -d 'Random live calls to start with' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l shape -d 'Shape of call-detail answers' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l seed -d 'Seed of the simulator\'s randomness' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand sim" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -l duration -d 'How long to run' -r
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -l config -d 'Config file' -r -F
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -l log-format -d 'Log format: auto = journald under systemd, else JSON lines when not a TTY' -r -f -a "auto\t'journald under systemd, else JSON lines when stderr is not a terminal, else pretty'
json\t'JSON lines'
pretty\t'Human-readable'"
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -s v -l verbose -d 'More log detail (-v debug, -vv trace); RUST_LOG overrides'
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c callwarden -n "__fish_callwarden_using_subcommand demo" -s V -l version -d 'Print version'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "run" -d 'Run the daemon: poll, evaluate, enforce until SIGTERM/SIGINT'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "check" -d 'Validate the config and every policy file without calling the API'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "once" -d 'One full cycle: list, evaluate, hang up calls already past their deadline, print a summary'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "explain" -d 'Show every rule for one live call (or a saved call): matched or not, and why'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "calls" -d 'List live calls with age, matched rules and time left'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "pardon" -d 'Ask the running daemon to spare one call, for a while or for good'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "hangup" -d 'Ask the running daemon to end calls now, by UUID or with --match'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "test" -d 'Run the policy test cases (default: tests/ beside the policy directory)'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "cluster" -d 'With [ha]: members, each account\'s leader, epoch and lease expiry, pending intents'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "sim" -d 'Run the bundled Vobiz API simulator'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "demo" -d 'Start the simulator with sample calls and policies, enforce against it, and summarise'
complete -c callwarden -n "__fish_callwarden_using_subcommand help; and not __fish_seen_subcommand_from run check once explain calls pardon hangup test cluster sim demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
