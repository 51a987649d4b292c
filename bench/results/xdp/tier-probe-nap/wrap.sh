#!/bin/bash
case "$*" in
*kdns-tier.sock*) export KDNS_XDP_SPIN=0 KDNS_XDP_NAP_US=0 ;;
*kdns-notier.sock*) export KDNS_XDP_SPIN=0 KDNS_XDP_NAP_US=30 ;;
*kdns-xdp-b.sock*) export KDNS_XDP_SPIN=0 KDNS_XDP_NAP_US=100 ;;
esac
exec /tmp/kdns-exp/kdns "$@"
