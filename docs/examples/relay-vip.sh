#!/bin/sh
# relay-vip.sh: announce relay's VIP over BGP (through BIRD, configured as in
# bird-relay-host.conf) only while relay serves, and withdraw it before relay
# drains.
#
#   relay-vip.sh watch     every INTERVAL s: announce if relay is healthy (its
#                          admin /healthz answers 200; without an admin API,
#                          it listens on PORT) and is not being stopped;
#                          withdraw if not
#   relay-vip.sh withdraw  withdraw now and keep it withdrawn until relay has
#                          stopped; return after HOLD s, once the router has
#                          moved new flows to the other hosts
#
# Settings (environment): RELAY_VIP_HEALTHZ (http://127.0.0.1:9901/healthz,
# relay's `admin` address; empty: follow the listening socket instead),
# RELAY_VIP_PORT (80), RELAY_VIP_INTERVAL (1 s), RELAY_VIP_HOLD (2 s),
# RELAY_VIP_BIRD_SOCKET (/run/bird/bird.ctl), RELAY_VIP_STATE (/run/relay-vip,
# where withdraw leaves its mark).
set -u
HEALTHZ=${RELAY_VIP_HEALTHZ-http://127.0.0.1:9901/healthz}
PORT=${RELAY_VIP_PORT:-80}
INTERVAL=${RELAY_VIP_INTERVAL:-1}
HOLD=${RELAY_VIP_HOLD:-2}
BIRD_SOCKET=${RELAY_VIP_BIRD_SOCKET:-/run/bird/bird.ctl}
STATE=${RELAY_VIP_STATE:-/run/relay-vip}

# birdc enable|disable on both static protocols (relay_vip4, relay_vip6).
vip() { birdc -s "$BIRD_SOCKET" "$1" '"relay_vip*"' >/dev/null; }
# /healthz says 503 from the moment relay begins to stop, and nothing once it
# is gone or hung (curl gives up after 1 s); a listening socket says only
# that the process holds it.
serving() {
  if [ -n "$HEALTHZ" ]; then curl -fsS -o /dev/null --max-time 1 "$HEALTHZ" 2>/dev/null
  else [ -n "$(ss -Hltn "sport = :$PORT")" ]; fi
}
signal() { if [ -n "$HEALTHZ" ]; then echo "$HEALTHZ"; else echo "a listener on port $PORT"; fi; }

watch() {
  said=""
  while :; do
    # withdraw's mark lasts until relay has stopped serving: a relay that
    # starts again is announced again.
    if [ -e "$STATE/draining" ] && ! serving; then rm -f "$STATE/draining"; fi
    if serving && [ ! -e "$STATE/draining" ]; then want=enable; else want=disable; fi
    # Said every time, not only on change: a BIRD that restarted starts with
    # the announcement disabled.
    if vip "$want" && [ "$want" != "$said" ]; then
      echo "relay-vip: $want (relay $( [ "$want" = enable ] && echo serves || echo "does not serve"), by $(signal))"
      said=$want
    fi
    sleep "$INTERVAL"
  done
}

withdraw() {
  mkdir -p "$STATE" && : > "$STATE/draining"
  vip disable || echo "relay-vip: birdc disable failed; the watcher withdraws within $INTERVAL s" >&2
  echo "relay-vip: withdrawn; holding $HOLD s before relay drains"
  sleep "$HOLD"
}

case "${1:-}" in
  watch) watch ;;
  withdraw) withdraw ;;
  *) echo "usage: relay-vip.sh watch|withdraw" >&2; exit 2 ;;
esac
