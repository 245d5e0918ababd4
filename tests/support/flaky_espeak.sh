#!/usr/bin/env bash
# A stand-in for espeak-ng that works once, then fails: the TTS engine dying mid-reply.
# FLAKY_ESPEAK_STATE names a counter file; the real espeak-ng does the first call.
count_file="${FLAKY_ESPEAK_STATE:?}"
count=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
echo "$count" > "$count_file"
if [ "$count" -gt 1 ]; then
  echo "espeak-ng: simulated crash" >&2
  exit 3
fi
exec espeak-ng "$@"
