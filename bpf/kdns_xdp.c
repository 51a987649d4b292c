// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * kdns XDP program: steer DNS queries for the configured listen addresses
 * and port into AF_XDP sockets, hand everything else to the kernel.
 *
 * Redirected to xsks_map[rx_queue_index] are ONLY frames that are
 *   - Ethernet, optionally with ONE 802.1Q (or 802.1ad) tag,
 *   - IPv4 (not a fragment: MF clear and offset 0, IHL >= 5, total length
 *     within the frame) or IPv6 with next header UDP (no extension headers,
 *     payload length within the frame),
 *   - with a destination address in listen_v4 / listen_v6 (or the wildcard
 *     key 0.0.0.0 / :: is present in the map),
 *   - UDP to destination port `dns_port`, UDP length >= 8 + 12 (a DNS header)
 *     and within the IP payload.
 * Everything else returns XDP_PASS. A queue whose xsks_map slot is empty
 * falls back to XDP_PASS through bpf_redirect_map's flags argument.
 *
 * Optional per-client query rate (client_interval_ns != 0): a matching
 * query whose source (masked to client_prefix_v4 / client_prefix_v6 bits)
 * is over its rate is dropped here, before any copy. The rate is a GCRA
 * (virtual scheduling): each client's entry in the LRU map client_rate
 * holds its theoretical arrival time `tat`; a query at `now` passes while
 * tat - now < client_burst_ns and moves tat on by client_interval_ns.
 * The entry is updated without a lock: two CPUs racing on one client can
 * let a query more through, never fewer (the limit is a bound on a flood,
 * not an accounting). The loader sets the globals and the map's size.
 *
 * Per-queue counters (PERCPU_ARRAY `counters`, key = rx queue index):
 *   redirected  bpf_redirect_map returned XDP_REDIRECT
 *   passed      not for us (other protocol/address/port, fragments), or a
 *               match whose queue has no socket (redirect fell back to PASS)
 *   malformed   an IP frame that is truncated / inconsistent before we could
 *               check it, or UDP to a listen address with bad lengths
 *               (passed to the kernel too: it decides what to do with it)
 *   dropped     queries dropped by the per-client rate (XDP_DROP), or a
 *               redirect that failed
 * Every frame increments exactly one counter.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define KDNS_MAX_QUEUES 64
#define KDNS_MAX_LISTEN 1024
#define DNS_HEADER_LEN 12
/* Largest IP length we accept: XDP without frags sees one linear buffer of
 * at most a page, so anything longer can't be complete in the frame anyway.
 * The bound also keeps the verifier's packet-pointer arithmetic in range. */
#define KDNS_MAX_IP_LEN 0x3fff

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct kdns_counters {
	__u64 redirected;
	__u64 passed;
	__u64 malformed;
	__u64 dropped;
};

/* A client: the source address masked to its prefix. */
struct client_key {
	__u32 family; /* 4 or 6 */
	__u32 addr[4];
};

struct client_val {
	__u64 tat;
};

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, KDNS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

/* Key: IPv4 address as it is on the wire (network byte order). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KDNS_MAX_LISTEN);
	__type(key, __u32);
	__type(value, __u8);
} listen_v4 SEC(".maps");

/* Key: the 16 address bytes as on the wire. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KDNS_MAX_LISTEN);
	__type(key, struct in6_addr);
	__type(value, __u8);
} listen_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KDNS_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct kdns_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct client_val);
} client_rate SEC(".maps");

/* The per-client rate: 0 = off. Set by the loader. */
volatile const __u64 client_interval_ns = 0;
volatile const __u64 client_burst_ns = 0;
volatile const __u32 client_prefix_v4 = 32;
volatile const __u32 client_prefix_v6 = 64;

/* DNS port in NETWORK byte order (compared with udphdr->dest as is).
 * The loader sets it with EbpfLoader::override_global("dns_port", port.to_be()). */
volatile const __u16 dns_port = bpf_htons(53);

enum verdict {
	V_PASS,
	V_MALFORMED,
	V_MATCH,
};

static __always_inline int listen_v4_has(__u32 daddr)
{
	__u32 any = 0;

	if (bpf_map_lookup_elem(&listen_v4, &daddr))
		return 1;
	return bpf_map_lookup_elem(&listen_v4, &any) != NULL;
}

static __always_inline int listen_v6_has(struct in6_addr *daddr)
{
	struct in6_addr any = {};

	if (bpf_map_lookup_elem(&listen_v6, daddr))
		return 1;
	return bpf_map_lookup_elem(&listen_v6, &any) != NULL;
}

/* The UDP header is in the frame; ip_payload = bytes after the IP header
 * according to the IP header's own length field. */
static __always_inline enum verdict check_udp(struct udphdr *udp, __u32 ip_payload)
{
	__u32 ulen;

	if (udp->dest != dns_port)
		return V_PASS;
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(struct udphdr) + DNS_HEADER_LEN || ulen > ip_payload)
		return V_MALFORMED;
	return V_MATCH;
}

/* Network-order mask of 32-bit word `word` of a /prefix. */
static __always_inline __u32 prefix_mask(__u32 prefix, __u32 word)
{
	__u32 bits;

	if (prefix <= word * 32)
		return 0;
	bits = prefix - word * 32;
	if (bits >= 32)
		return 0xffffffff;
	return bpf_htonl(0xffffffff << (32 - bits));
}

static __always_inline enum verdict classify_v4(void *l3, void *data_end, struct client_key *key)
{
	struct iphdr *iph = l3;
	struct udphdr *udp;
	__u32 hlen, tot_len;

	if ((void *)(iph + 1) > data_end)
		return V_MALFORMED;
	if (iph->protocol != IPPROTO_UDP)
		return V_PASS;
	if (!listen_v4_has(iph->daddr))
		return V_PASS;
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return V_PASS; /* the kernel reassembles */
	hlen = iph->ihl * 4;
	if (hlen < sizeof(struct iphdr))
		return V_MALFORMED;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len > KDNS_MAX_IP_LEN || tot_len < hlen + sizeof(struct udphdr))
		return V_MALFORMED;
	if (l3 + tot_len > data_end)
		return V_MALFORMED;
	udp = l3 + hlen;
	if ((void *)(udp + 1) > data_end)
		return V_MALFORMED;
	key->family = 4;
	key->addr[0] = iph->saddr & prefix_mask(client_prefix_v4, 0);
	return check_udp(udp, tot_len - hlen);
}

static __always_inline enum verdict classify_v6(void *l3, void *data_end, struct client_key *key)
{
	struct ipv6hdr *ip6 = l3;
	struct udphdr *udp;
	__u32 plen;

	if ((void *)(ip6 + 1) > data_end)
		return V_MALFORMED;
	if (ip6->nexthdr != IPPROTO_UDP)
		return V_PASS; /* includes extension headers and fragments */
	if (!listen_v6_has(&ip6->daddr))
		return V_PASS;
	plen = bpf_ntohs(ip6->payload_len);
	if (plen > KDNS_MAX_IP_LEN || plen < sizeof(struct udphdr))
		return V_MALFORMED;
	if ((void *)(ip6 + 1) + plen > data_end)
		return V_MALFORMED;
	udp = (void *)(ip6 + 1);
	if ((void *)(udp + 1) > data_end)
		return V_MALFORMED;
	key->family = 6;
#pragma unroll
	for (int i = 0; i < 4; i++)
		key->addr[i] = ip6->saddr.in6_u.u6_addr32[i] & prefix_mask(client_prefix_v6, i);
	return check_udp(udp, plen);
}

static __always_inline enum verdict classify(void *data, void *data_end, struct client_key *key)
{
	struct ethhdr *eth = data;
	void *l3;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return V_PASS; /* not even Ethernet: not ours to judge */
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = l3;

		if ((void *)(tag + 1) > data_end)
			return V_PASS;
		proto = tag->encapsulated_proto;
		l3 = tag + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return classify_v4(l3, data_end, key);
	if (proto == bpf_htons(ETH_P_IPV6))
		return classify_v6(l3, data_end, key);
	return V_PASS;
}

/* Whether the client `key` is over its rate at `now` (see the top). */
static __always_inline int over_rate(struct client_key *key)
{
	__u64 now = bpf_ktime_get_ns();
	struct client_val *v = bpf_map_lookup_elem(&client_rate, key);
	__u64 tat;

	if (!v) {
		struct client_val fresh = { .tat = now + client_interval_ns };

		bpf_map_update_elem(&client_rate, key, &fresh, BPF_ANY);
		return 0;
	}
	tat = v->tat;
	if (tat < now)
		tat = now;
	if (tat - now >= client_burst_ns)
		return 1;
	v->tat = tat + client_interval_ns;
	return 0;
}

SEC("xdp")
int kdns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 queue = ctx->rx_queue_index;
	struct kdns_counters *cnt = bpf_map_lookup_elem(&counters, &queue);
	struct client_key key = {};
	enum verdict v = classify(data, data_end, &key);
	long action;

	if (v == V_MATCH && client_interval_ns && over_rate(&key)) {
		if (cnt)
			cnt->dropped++;
		return XDP_DROP;
	}
	if (v == V_MATCH) {
		/* Empty slot (or queue >= max_entries): XDP_PASS. */
		action = bpf_redirect_map(&xsks_map, queue, XDP_PASS);
		if (cnt) {
			if (action == XDP_REDIRECT)
				cnt->redirected++;
			else if (action == XDP_PASS)
				cnt->passed++;
			else
				cnt->dropped++;
		}
		return action;
	}
	if (cnt) {
		if (v == V_MALFORMED)
			cnt->malformed++;
		else
			cnt->passed++;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
