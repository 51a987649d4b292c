# Load generators of the rig (sourced by rig.sh): kxdpgun and livegen
# (AF_XDP / BPF live frames, open loop) and dnsperf (sockets). Each prints
# "sent received" for the run; the whole output is kept in $RIG_DIR.

# gen_kxdpgun ADDR QPS SECONDS FILE -> "sent received": kxdpgun on the pair
# that holds ADDR (rig_xdp.sh's pairs, else the main pair), pinned to the
# generator core
gen_kxdpgun() {
    local a=$1 ifg=$IF_GEN lmac=$GEN_MAC rmac=$SRV_MAC lip=$GEN_V4 i
    for i in "${XP_IDX[@]}"; do
        if [[ $a == "${XP_V4_S[$i]}" ]]; then
            ifg=${XP_IF_G[$i]} lmac=${XP_MAC_G[$i]} rmac=${XP_MAC_S[$i]} lip=${XP_V4_G[$i]}
        fi
    done
    local out="$RIG_DIR/kxdpgun.out" try
    for try in 1 2 3 4 5; do
        timeout $(($3 + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
            kxdpgun -t "$3" -Q "$2" -i "$4" -I "$ifg" -F "$GEN_CORE" -L "$lmac" -R "$rmac" -l "$lip" "$a" >"$out" 2>&1 || true
        cat "$out" >>"$RIG_DIR/kxdpgun.all"
        # the previous run's XDP socket may still be going away ("resource is busy")
        grep -q '^total queries:' "$out" && break
        log "kxdpgun did not run (try $try): $(head -c 200 "$out" | tr '\n' ' ')"
        sleep 1
    done
    awk '/^total queries:/ {s=$3} /^total replies:/ {r=$3} END {printf "%d %d\n", s, r}' "$out"
}

# gen_livegen ADDR QPS SECONDS [FILE] -> "sent received": ../shared/tools/livegen
# (BPF_PROG_RUN live frames, 2-3M queries/s from one core; LIVEGEN = its
# binary, built with make in a writable copy; LIVEGEN_ARGS e.g. "-B 128").
# One name, the first of FILE (the hit set's first name by default).
gen_livegen() {
    local a=$1 ifg=$IF_GEN rmac=$SRV_MAC name=n0.bench.test i
    [[ -x ${LIVEGEN:-} ]] || die "gen livegen needs LIVEGEN (cp -r ../shared/tools/livegen /tmp/livegen && make -C /tmp/livegen)"
    for i in "${XP_IDX[@]}"; do
        [[ $a == "${XP_V4_S[$i]}" ]] && ifg=${XP_IF_G[$i]} rmac=${XP_MAC_S[$i]}
    done
    [[ -n ${4:-} && -s ${4:-} ]] && name=$(awk 'NR == 1 {print $1}' "$4")
    local out="$RIG_DIR/livegen.out"
    # shellcheck disable=SC2086
    timeout $(($3 + 20)) ip netns exec "$NS_GEN" taskset -c "$GEN_CORE" \
        "$LIVEGEN" -i "$ifg" -d "$a" -m "$rmac" -r "$2" -t "$3" -n "$name" ${LIVEGEN_ARGS:-} >"$out" 2>&1 || true
    cat "$out" >>"$RIG_DIR/livegen.all"
    awk '/^total queries:/ {s=$3} /^total replies:/ {r=$3} END {printf "%d %d\n", s, r}' "$out"
}

# gen_dnsperf ADDR QPS SECONDS FILE [CLIENTS [EXTRA ARGS...]] -> "sent received runtime_s"
# Open loop as far as dnsperf goes: up to 20000 queries outstanding, 1 s
# timeout. The whole output stays in $RIG_DIR/dnsperf.out.
gen_dnsperf() {
    local a=$1 q=$2 d=$3 f=$4 c=${5:-8}
    shift 5 2>/dev/null || shift $#
    local out="$RIG_DIR/dnsperf.out"
    timeout $((d + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
        dnsperf -s "$a" -d "$f" -l "$d" -Q "$q" -c "$c" -T 1 -q 20000 -t 1 -b "${DNSPERF_BUF_KB:-4096}" "$@" >"$out" 2>&1 || true
    grep -v -e '^\[Timeout\]' -e '^> ' "$out" >>"$RIG_DIR/dnsperf.all"
    awk '/Queries sent:/ {s=$3} /Queries completed:/ {r=$3} /Run time \(s\):/ {t=$4} END {printf "%d %d %s\n", s, r, t}' "$out"
}
