# shellcheck shell=bash
# lib.sh — helpers shared by tools.sh, up.sh and down.sh (sourced, not run).

# alive_pid NAME: pid of component NAME if $PIDS/NAME.pid names a live process running that
# binary, else fails.
alive_pid() {
  local f=$PIDS/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$1"* ]] || return 1
  echo "$pid"
}

# port_busy PORT: something listens on TCP PORT.
port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
