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
 *   dropped     queries dropped by the per-client rate (XDP_DROP), a
 *               redirect that failed, or an answer whose map entry was
 *               replaced while the reply was being written (see below)
 *   answered    answered here from the `answers` map (XDP_TX); such a
 *               frame is not counted in `redirected`
 * Every frame increments exactly one of these five. One more counter is
 * not part of that partition:
 *   answer_misses  the answer tier is on and a query that classify() let
 *               through (and the rate did not drop) was not answered here:
 *               no entry, expired, or not eligible (client outside the
 *               ACL, IP options, a DNS shape the tier does not handle);
 *               it also counts in redirected / passed as before.
 *
 * Answer tier (global `answer_tier_on`, set by the loader; off: none of
 * this runs). For a matching query within the rate, the program answers
 * itself with XDP_TX when ALL of these hold (else: the redirect above):
 *   - IPv4 with IHL 5, or IPv6 (no extension headers); at most one VLAN
 *     tag (kept in the reply);
 *   - the source address is in `acl_v4` / `acl_v6` (LPM tries the loader
 *     fills from the allowed client networks; 0.0.0.0/0 and ::/0 when
 *     every client is allowed);
 *   - DNS header: QR 0, OPCODE 0, QDCOUNT 1, ANCOUNT 0, NSCOUNT 0,
 *     ARCOUNT 0 or 1; the QNAME uncompressed (labels 1..63 bytes), at most
 *     KDNS_ANSWER_NAME_MAX bytes on the wire; with ARCOUNT 1 the record is
 *     an OPT (root owner, type 41, version 0) that ends exactly at the end
 *     of the UDP payload, with ARCOUNT 0 the question does;
 *   - `answers` holds the key {rx queue, QTYPE, QCLASS, DO | CD << 1,
 *     QNAME length, hash of the QNAME with A-Z lower-cased}, the entry's
 *     name equals that QNAME, and now < serve_until_ns;
 *   - the reply (header, question, body, our OPT if the query had one)
 *     is at most 512 bytes.
 * The reply is what kdns' userspace engine would send: the query's ID,
 * flags = (stored & ~(RD|CD)) | QR | (query's RD|CD), the counts stored
 * (ARCOUNT + 1 with an OPT), the question exactly as received, the stored
 * body with every TTL field counted down by the entry's age in whole
 * seconds (saturating at 0), then with a query OPT our OPT (UDP size
 * `answer_udp_size`, DO echoed, no options). MACs, addresses and ports
 * swapped; IPv4 ID 0, DF only, TTL 64; IPv6 hop limit 64; lengths and
 * checksums (UDP always) recomputed, the UDP one from the body's sum the
 * loader stored (`body_csum`) and the parts that change. The frame is
 * resized at its tail, or, without tailroom (veth, generic XDP), at its
 * head with the headers and question moved forward.
 *
 * Entries are replaced by the workers while the program may be reading
 * one (a hash map element can be reused by another update at once): the
 * program reads the entry's stamps (serve_until_ns, inserted_ns,
 * body_len, body_csum) first and again after its last read of the entry;
 * if they changed, the frame (already rewritten) is dropped and counted
 * in `dropped`: the client retries.
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
	__u64 answered;
	__u64 answer_misses;
};

#define KDNS_ANSWER_NAME_MAX 128 /* wire name incl. the root label; longer names are never promoted */
#define KDNS_ANSWER_BODY_MAX 488 /* bytes after the question */
#define KDNS_ANSWER_TTLS_MAX 16
#define KDNS_ANSWER_REPLY_MAX 512 /* DNS payload of a reply the tier sends */
#define KDNS_MAX_ACL 1024
#define DNS_OPT_LEN 11

/* Key of `answers`: zero-initialised, padding included. The name is in
 * the key as a seeded 64-bit hash (the map then hashes and compares 24
 * bytes, not 140); the value holds the name itself, which the program
 * compares before answering, so a collision can cost an answer from the
 * tier, never a wrong one. */
struct answer_key {
	__u32 queue;   /* rx queue index: each queue's worker owns its keys */
	__u16 qtype;   /* network byte order, as on the wire */
	__u16 qclass;  /* network byte order */
	__u8 flags;    /* 1 = DO bit set in the query's OPT, 2 = CD bit set in the header */
	__u8 name_len; /* wire length incl. the final 0 */
	__u8 pad[6];
	__u64 name_hash; /* name_hash() of the lower-cased wire name */
};

struct answer_val {
	__u64 serve_until_ns; /* CLOCK_MONOTONIC: answer only while now < this */
	__u64 inserted_ns;    /* CLOCK_MONOTONIC: the stored TTLs are as of this instant */
	__u64 hits;           /* incremented here (racy) */
	__u8 header[10];      /* DNS header bytes 2..12: flags, QD/AN/NS/ARCOUNT (no OPT) */
	__u16 body_len;       /* <= KDNS_ANSWER_BODY_MAX */
	__u8 n_ttl;           /* <= KDNS_ANSWER_TTLS_MAX */
	__u8 name_len;        /* of name[] */
	__u8 pad[2];
	__u32 body_csum; /* 32-bit sum of the body's 16-bit words in host order, as at
			  * an even offset, TTL fields zeroed, an odd last byte padded with 0 */
	__u16 ttl_off[KDNS_ANSWER_TTLS_MAX]; /* offset of each TTL field within body */
	__u32 ttl[KDNS_ANSWER_TTLS_MAX];     /* stored TTL of each, seconds */
	__u8 body[KDNS_ANSWER_BODY_MAX];     /* answer, authority, additional (no OPT) */
	__u8 name[KDNS_ANSWER_NAME_MAX];     /* wire form, ASCII lower-cased, zero padded */
	__u8 pad2[4];                        /* explicit tail padding (8-byte alignment) */
};

/* The name's hash in the key: over the lower-cased wire name as 32-bit
 * words in host order (the last one zero padded), seeded per program
 * (answer_hash_seed); kdns-sys computes the same (answers.rs name_hash). */
#define NAME_HASH_MUL 0x9e3779b97f4a7c15ULL
static __always_inline __u64 name_hash_step(__u64 h, __u32 w)
{
	h = (h ^ w) * NAME_HASH_MUL;
	return h ^ (h >> 32);
}

struct acl_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct acl_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Where classify() found the headers of a matching query. */
struct pkt {
	__u32 l3;   /* offset of the IP header: 14 or 18 */
	__u32 l4;   /* offset of the UDP header */
	__u32 ulen; /* UDP length (header included), within the IP payload */
	__u32 v6;
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

/* The answer tier's entries; max_entries set by the loader (1 when the
 * tier is off). Never pinned: a new program starts empty. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct answer_key);
	__type(value, struct answer_val);
} answers SEC(".maps");

/* Most bytes before the body that a reply's headers and question take
 * (moved when the frame must grow at the head, see answer_write). */
#define KDNS_SCRATCH 256

/* Allowed client networks of the answer tier (value unused). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, KDNS_MAX_ACL);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct acl_v4_key);
	__type(value, __u8);
} acl_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, KDNS_MAX_ACL);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct acl_v6_key);
	__type(value, __u8);
} acl_v6 SEC(".maps");

/* The answer tier: 0 = off. Our EDNS UDP size (host order) for the OPT of
 * a reply. Set by the loader. */
volatile const __u32 answer_tier_on = 0;
volatile const __u16 answer_udp_size = 1232;
/* Every client is allowed (the tries hold only /0): skip their lookups. */
volatile const __u32 answer_acl_all = 0;
/* Seed of the names' hash in the answers key (random per load). */
volatile const __u64 answer_hash_seed = 0;

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

static __always_inline enum verdict classify_v4(void *l3, void *data_end, struct client_key *key, struct pkt *pk)
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
	pk->l4 = pk->l3 + hlen;
	pk->ulen = bpf_ntohs(udp->len);
	pk->v6 = 0;
	return check_udp(udp, tot_len - hlen);
}

static __always_inline enum verdict classify_v6(void *l3, void *data_end, struct client_key *key, struct pkt *pk)
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
	pk->l4 = pk->l3 + sizeof(struct ipv6hdr);
	pk->ulen = bpf_ntohs(udp->len);
	pk->v6 = 1;
	return check_udp(udp, plen);
}

static __always_inline enum verdict classify(void *data, void *data_end, struct client_key *key, struct pkt *pk)
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
	pk->l3 = l3 - data;
	if (proto == bpf_htons(ETH_P_IP))
		return classify_v4(l3, data_end, key, pk);
	if (proto == bpf_htons(ETH_P_IPV6))
		return classify_v6(l3, data_end, key, pk);
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

/* ------------------------------------------------------------ answer tier */

enum answer_result {
	A_MISS,     /* not answered, packet untouched: the redirect path */
	A_ANSWERED, /* reply written: XDP_TX */
	A_DROP,     /* packet already rewritten but no reply fit to send */
};

#define DNS_QR 0x8000
#define DNS_OPCODE 0x7800
#define DNS_RD 0x0100
#define DNS_CD 0x0010
#define DNS_TYPE_OPT 41

/* Folds a 64-bit sum of host-order 16/32-bit words to 16 bits. */
static __always_inline __u32 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u32)s;
}

/* A 16-bit folded sum of bytes summed as if at an even offset, for those
 * bytes at offset `at`: byte-swapped when `at` is odd (branch-free). */
static __always_inline __u32 csum_at(__u32 folded, __u32 at)
{
	__u32 rot = (at & 1) << 3;

	return ((folded << rot) | (folded >> (16 - rot))) & 0xffff;
}

/* Lower-cases A-Z in the four bytes of `x` (SWAR; other bytes unchanged). */
static __always_inline __u32 lower4(__u32 x)
{
	__u32 h = x & 0x7f7f7f7f;
	__u32 ge_a = h + 0x3f3f3f3f; /* high bit: byte & 0x7f >= 'A' */
	__u32 gt_z = h + 0x25252525; /* high bit: byte & 0x7f > 'Z' */
	__u32 upper = ~x & (ge_a ^ gt_z) & 0x80808080;

	return x | (upper >> 2);
}

static __always_inline int acl_allows(void *data, void *data_end, struct pkt *pk)
{
	void *l3 = data + (pk->l3 & 0x1f);

	if (pk->v6) {
		struct ipv6hdr *ip6 = l3;
		struct acl_v6_key k = { .prefixlen = 128 };

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		__builtin_memcpy(k.addr, &ip6->saddr, 16);
		return bpf_map_lookup_elem(&acl_v6, &k) != NULL;
	} else {
		struct iphdr *iph = l3;
		struct acl_v4_key k = { .prefixlen = 32 };

		if ((void *)(iph + 1) > data_end)
			return 0;
		__builtin_memcpy(k.addr, &iph->saddr, 4);
		return bpf_map_lookup_elem(&acl_v4, &k) != NULL;
	}
}

/* What answer_write() needs of the query, packed (a BPF call has at most
 * five arguments). */
#define M_DNS_OFF(m) ((__u32)(m) & 0xff)         /* offset of the DNS header */
#define M_L3(m) ((__u32)((m) >> 8) & 0x1f)       /* offset of the IP header */
#define M_V6(m) ((__u32)((m) >> 13) & 1)
#define M_OPT(m) ((__u32)((m) >> 14) & 1)        /* the query had an OPT */
#define M_DO(m) ((__u32)((m) >> 15) & 1)         /* ... with DO set */
#define M_NAME_LEN(m) ((__u32)((m) >> 16) & 0xff)
#define M_QFLAGS(m) ((__u32)((m) >> 24) & 0xffff) /* the query's header flags, host order */

/*
 * Writes the reply to the query described by `meta` from the entry `val`
 * and returns A_ANSWERED, or A_MISS (the frame untouched) when the entry
 * can't serve it, or A_DROP (the frame already rewritten). `sums`: the
 * folded sum of the QNAME as received (low 16 bits) and of QTYPE+QCLASS
 * (bits 16..31), both as at an even offset.
 *
 * A global function: the verifier checks it once, with every argument
 * unknown, instead of once for each way the parser can reach it.
 */
__noinline int answer_write(struct xdp_md *ctx, struct answer_val *val, __u64 meta, __u64 now, __u64 sums)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 dns_off = M_DNS_OFF(meta), l3 = M_L3(meta), name_len = M_NAME_LEN(meta);
	__u32 has_opt = M_OPT(meta), do_bit = M_DO(meta), qflags = M_QFLAGS(meta);
	__u32 q_end, blen, n_ttl, bcsum, reply_len, new_len, l4, csum, i;
	__u64 until, inserted, age, sum, sum_b;
	__u16 rflags;
	__u8 *p, *dns;
	__u8 opt[12] = {};
	int delta;

	if (!val || name_len == 0 || name_len > KDNS_ANSWER_NAME_MAX)
		return A_MISS;
	until = val->serve_until_ns;
	inserted = val->inserted_ns;
	blen = val->body_len;
	bcsum = val->body_csum;
	n_ttl = val->n_ttl;
	if (now >= until || blen > KDNS_ANSWER_BODY_MAX || n_ttl > KDNS_ANSWER_TTLS_MAX)
		return A_MISS;
	reply_len = DNS_HEADER_LEN + name_len + 4 + blen + (has_opt ? DNS_OPT_LEN : 0);
	if (reply_len > KDNS_ANSWER_REPLY_MAX)
		return A_MISS;
	q_end = dns_off + DNS_HEADER_LEN + name_len + 4;
	if (q_end > KDNS_SCRATCH)
		return A_MISS; /* can't be: dns_off <= 66 */
	l4 = l3 + (M_V6(meta) ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));

	/* Committed: size the frame (it may hold padding past the UDP end). */
	new_len = dns_off + reply_len;
	delta = (int)new_len - (int)(data_end - data);
	if (bpf_xdp_adjust_tail(ctx, delta)) {
		/* No tailroom (veth, generic XDP: an skb's buffer has a cache
		 * line of slack at most): grow at the head instead, and move the
		 * headers, DNS header and question (q_end <= 256 bytes) to the
		 * new start, 8 bytes at a time; the last 8 bytes are read first
		 * and written last (the copy overlaps itself). */
		__u32 n8, k;
		__u64 last;

		if (delta <= 0 || delta > KDNS_ANSWER_REPLY_MAX)
			return A_MISS; /* shrinking never fails; not expected */
		if (bpf_xdp_adjust_head(ctx, -delta))
			return A_MISS; /* no room either: the frame is unchanged */
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		p = data + ((delta + q_end - 8) & 0x3ff);
		if ((void *)(p + 8) > data_end)
			return A_DROP;
		last = *(__u64 *)p;
		n8 = q_end >> 3;
		asm volatile("" : "+r"(n8));
		for (k = 0; k < KDNS_SCRATCH / 8; k++) {
			__u8 *from, *to;

			if (k >= n8)
				break;
			from = data + ((delta + k * 8) & 0x3ff);
			to = data + k * 8;
			if ((void *)(from + 8) > data_end || (void *)(to + 8) > data_end)
				return A_DROP;
			*(__u64 *)to = *(__u64 *)from;
		}
		p = data + ((q_end - 8) & 0x1ff);
		if ((void *)(p + 8) > data_end)
			return A_DROP;
		*(__u64 *)p = last;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* Body, 8 bytes at a time (a count of its own, see the QNAME loop),
	 * then its TTL fields. */
	{
		__u32 n8 = blen >> 3, n1 = blen & 7, k;

		asm volatile("" : "+r"(n8));
		for (k = 0; k < KDNS_ANSWER_BODY_MAX / 8; k++) {
			if (k >= n8)
				break;
			p = data + ((q_end + k * 8) & 0x7ff);
			if ((void *)(p + 8) > data_end)
				return A_DROP;
			*(__u64 *)p = *(__u64 *)&val->body[k * 8];
		}
		if (n1) {
			/* The last 0..7 bytes: the body's last 8 bytes again
			 * (overlapping what is there), or a helper for a body
			 * shorter than 8. */
			__u64 at = blen - 8;

			if (blen < 8) {
				for (k = 0; k < 8; k++) {
					if (k >= n1)
						break;
					p = data + ((q_end + k) & 0x7ff);
					if ((void *)(p + 1) > data_end)
						return A_DROP;
					*p = val->body[k];
				}
			} else {
				asm volatile("" : "+r"(at));
				if (at > KDNS_ANSWER_BODY_MAX - 8)
					return A_DROP;
				p = data + ((q_end + at) & 0x7ff);
				if ((void *)(p + 8) > data_end)
					return A_DROP;
				*(__u64 *)p = *(__u64 *)&val->body[at];
			}
		}
	}
	age = inserted < now ? (now - inserted) / 1000000000ULL : 0; /* < 2^35 */
	sum_b = sums >> 16;
	for (i = 0; i < KDNS_ANSWER_TTLS_MAX; i++) {
		__u32 off, t_be, t_sum;
		__u64 d;

		if (i >= n_ttl)
			break;
		off = val->ttl_off[i];
		if (off + 4 > blen)
			return A_DROP; /* insert() never stores such an entry */
		d = (__u64)val->ttl[i] - age;
		d &= ~(__u64)((__s64)d >> 63); /* saturate at 0 */
		t_be = bpf_htonl((__u32)d);
		p = data + ((q_end + off) & 0x7ff);
		if ((void *)(p + 4) > data_end)
			return A_DROP;
		*(__u32 *)p = t_be;
		t_sum = (t_be & 0xffff) + (t_be >> 16);
		t_sum = (t_sum & 0xffff) + (t_sum >> 16);
		sum_b += csum_at(t_sum, off);
	}
	/* Our OPT. */
	if (has_opt) {
		__u16 size_be = bpf_htons(answer_udp_size);
		__u64 o = 0;

		opt[2] = DNS_TYPE_OPT;
		__builtin_memcpy(&opt[3], &size_be, 2);
		opt[7] = do_bit ? 0x80 : 0;
		p = data + ((q_end + blen) & 0x7ff);
		if ((void *)(p + DNS_OPT_LEN) > data_end)
			return A_DROP;
#pragma unroll
		for (int k = 0; k < DNS_OPT_LEN; k++)
			p[k] = opt[k];
#pragma unroll
		for (int k = 0; k < 6; k++)
			o += *(__u16 *)&opt[k * 2];
		sum_b += csum_at(csum_fold(o), blen);
	}
	sum_b += bcsum;

	/* DNS header: the ID stays, flags and counts from the entry. */
	dns = data + dns_off;
	if ((void *)(dns + DNS_HEADER_LEN) > data_end)
		return A_DROP;
	__builtin_memcpy(dns + 2, val->header, 10);
	/* The entry is read for the last time: was it replaced meanwhile? */
	if (val->serve_until_ns != until || val->inserted_ns != inserted || val->body_len != blen ||
	    val->body_csum != bcsum)
		return A_DROP;
	val->hits++;
	rflags = bpf_ntohs(*(__u16 *)(dns + 2));
	rflags = (rflags & ~(DNS_RD | DNS_CD)) | DNS_QR | (qflags & (DNS_RD | DNS_CD));
	*(__u16 *)(dns + 2) = bpf_htons(rflags);
	if (has_opt) {
		__u16 arc = bpf_ntohs(*(__u16 *)(dns + 10)) + 1;

		*(__u16 *)(dns + 10) = bpf_htons(arc);
	}
	sum = sums & 0xffff;
#pragma unroll
	for (i = 0; i < DNS_HEADER_LEN / 2; i++)
		sum += *(__u16 *)(dns + i * 2);
	sum += csum_at(csum_fold(sum_b), name_len);

	/* Ethernet, IP, UDP. */
	{
		struct ethhdr *eth = data;
		struct udphdr *udp = data + l4;
		__u8 mac[ETH_ALEN];
		__u16 ulen_be = bpf_htons(sizeof(struct udphdr) + reply_len), port;

		if ((void *)(eth + 1) > data_end || (void *)(udp + 1) > data_end)
			return A_DROP;
		__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
		if (M_V6(meta)) {
			struct ipv6hdr *ip6 = data + l3;
			struct in6_addr a;

			if ((void *)(ip6 + 1) > data_end)
				return A_DROP;
			a = ip6->saddr;
			ip6->saddr = ip6->daddr;
			ip6->daddr = a;
			ip6->payload_len = ulen_be;
			ip6->hop_limit = 64;
#pragma unroll
			for (i = 0; i < 4; i++)
				sum += (__u64)ip6->saddr.in6_u.u6_addr32[i] + ip6->daddr.in6_u.u6_addr32[i];
		} else {
			struct iphdr *iph = data + l3;
			__u32 a;
			__u64 isum = 0;

			if ((void *)(iph + 1) > data_end)
				return A_DROP;
			a = iph->saddr;
			iph->saddr = iph->daddr;
			iph->daddr = a;
			iph->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + reply_len);
			iph->id = 0;
			iph->frag_off = bpf_htons(0x4000);
			iph->ttl = 64;
			iph->check = 0;
#pragma unroll
			for (i = 0; i < sizeof(struct iphdr) / 2; i++)
				isum += ((__u16 *)iph)[i];
			iph->check = ~csum_fold(isum) & 0xffff;
			sum += (__u64)iph->saddr + iph->daddr;
		}
		port = udp->source;
		udp->source = udp->dest;
		udp->dest = port;
		udp->len = ulen_be;
		/* pseudo header (protocol, length) + UDP header (ports, length) */
		sum += (__u64)bpf_htons(IPPROTO_UDP) + ulen_be + ulen_be + udp->source + udp->dest;
		csum = ~csum_fold(sum) & 0xffff;
		udp->check = csum ? csum : 0xffff;
	}
	return A_ANSWERED;
}

/* Parses the query (see the top), looks its key up and has answer_write()
 * answer it. */
static __always_inline int try_answer(struct xdp_md *ctx, struct pkt *pk)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct answer_key akey;
	struct answer_val *val;
	__u32 l3 = pk->l3 & 0x1f, l4 = pk->l4 & 0x7f;
	__u32 dns_off, payload, qname_off, pos, name_len, q_end, i, nwords;
	__u16 qflags, ar;
	__u8 *p, *dns;
	__u64 has_opt = 0, do_bit = 0, sum, qtq, meta, h;
	__u32 lname[KDNS_ANSWER_NAME_MAX / 4] = {};

	if (!pk->v6) {
		struct iphdr *iph = data + l3;

		if ((void *)(iph + 1) > data_end || iph->ihl != 5)
			return A_MISS; /* IP options: userspace */
	}
	if (!answer_acl_all && !acl_allows(data, data_end, pk))
		return A_MISS;

	dns_off = l4 + sizeof(struct udphdr);
	payload = pk->ulen - sizeof(struct udphdr);
	if (payload < DNS_HEADER_LEN || payload > 1500)
		return A_MISS;
	dns = data + dns_off;
	if ((void *)(dns + DNS_HEADER_LEN) > data_end)
		return A_MISS;
	qflags = bpf_ntohs(*(__u16 *)(dns + 2));
	if (qflags & (DNS_QR | DNS_OPCODE))
		return A_MISS;
	if (*(__u16 *)(dns + 4) != bpf_htons(1) || *(__u16 *)(dns + 6) || *(__u16 *)(dns + 8))
		return A_MISS;
	ar = bpf_ntohs(*(__u16 *)(dns + 10));
	if (ar > 1)
		return A_MISS;

	/* QNAME: hop over the labels. */
	qname_off = dns_off + DNS_HEADER_LEN;
	pos = 0;
	for (i = 0; i < KDNS_ANSWER_NAME_MAX / 2; i++) {
		__u8 len;

		p = data + qname_off + pos;
		if ((void *)(p + 1) > data_end)
			return A_MISS;
		len = *p;
		if (len == 0)
			break;
		if (len >= 0x40)
			return A_MISS; /* compression pointer or extended label */
		pos += len + 1;
		if (pos >= KDNS_ANSWER_NAME_MAX)
			return A_MISS;
	}
	/* Ended on the root label? (Checked again rather than with the loop
	 * counter: a counter live after the loop would make the verifier
	 * walk the rest once per label count.) */
	p = data + qname_off + pos;
	if ((void *)(p + 1) > data_end || *p != 0)
		return A_MISS;
	/* The barrier keeps clang from dropping the mask the verifier needs. */
	asm volatile("" : "+r"(pos));
	name_len = (pos & (KDNS_ANSWER_NAME_MAX - 1)) + 1; /* 1..KDNS_ANSWER_NAME_MAX */

	/* QTYPE, QCLASS, then nothing or exactly one OPT. */
	q_end = qname_off + name_len + 4;
	p = data + qname_off + name_len;
	if ((void *)(p + 4) > data_end)
		return A_MISS;
	__builtin_memset(&akey, 0, sizeof(akey));
	h = answer_hash_seed ^ name_len;
	akey.qtype = *(__u16 *)p;
	akey.qclass = *(__u16 *)(p + 2);
	qtq = csum_fold((__u64)akey.qtype + akey.qclass);
	if (ar == 0) {
		if (q_end != dns_off + payload)
			return A_MISS;
	} else {
		__u16 rdlen;

		p = data + (q_end & 0x7ff);
		if ((void *)(p + DNS_OPT_LEN) > data_end)
			return A_MISS;
		if (p[0] != 0 || p[1] != 0 || p[2] != DNS_TYPE_OPT || p[6] != 0)
			return A_MISS; /* not an OPT, or EDNS version != 0 */
		rdlen = ((__u16)p[9] << 8) | p[10];
		if (q_end + DNS_OPT_LEN + rdlen != dns_off + payload)
			return A_MISS;
		has_opt = 1;
		do_bit = p[7] >> 7;
	}

	/* The key: the hash of the name lower-cased (the name also summed as
	 * received for the checksum), read a word at a time; the last word's bytes past the name are masked off (the
	 * 4 bytes of QTYPE and QCLASS follow, so every word is in the frame).
	 * The loop has a count of its own: a break on name_len would narrow
	 * name_len's range differently per exit, and the verifier would walk
	 * the rest once per word count. */
	sum = 0;
	nwords = (name_len + 3) >> 2;
	for (i = 0; i < KDNS_ANSWER_NAME_MAX / 4; i++) {
		__u32 w, valid, mask;

		if (i >= nwords)
			break;
		p = data + qname_off + i * 4;
		if ((void *)(p + 4) > data_end)
			return A_MISS;
		w = *(__u32 *)p;
		valid = name_len - i * 4;
		valid = valid > 4 ? 4 : valid;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		mask = 0xffffffffU >> ((4 - valid) * 8);
#else
		mask = 0xffffffffU << ((4 - valid) * 8);
#endif
		w &= mask;
		sum += w;
		lname[i] = lower4(w);
		h = name_hash_step(h, lname[i]);
	}
	akey.queue = ctx->rx_queue_index;
	akey.flags = do_bit | ((qflags & DNS_CD) ? 2 : 0);
	akey.name_len = name_len;
	akey.name_hash = h;

	val = bpf_map_lookup_elem(&answers, &akey);
	if (!val)
		return A_MISS;
	/* The name itself (see struct answer_key). */
	if (val->name_len != name_len)
		return A_MISS;
	for (i = 0; i < KDNS_ANSWER_NAME_MAX / 4; i++) {
		if (i >= nwords)
			break;
		if (lname[i] != *(__u32 *)&val->name[i * 4])
			return A_MISS;
	}
	meta = dns_off | (l3 << 8) | ((__u64)(pk->v6 & 1) << 13) | (has_opt << 14) | (do_bit << 15) |
	       ((__u64)name_len << 16) | ((__u64)qflags << 24);
	return answer_write(ctx, val, meta, bpf_ktime_get_ns(), csum_fold(sum) | (qtq << 16));
}

SEC("xdp")
int kdns_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 queue = ctx->rx_queue_index;
	struct kdns_counters *cnt = bpf_map_lookup_elem(&counters, &queue);
	struct client_key key = {};
	struct pkt pk = {};
	enum verdict v = classify(data, data_end, &key, &pk);
	long action;

	if (v == V_MATCH && client_interval_ns && over_rate(&key)) {
		if (cnt)
			cnt->dropped++;
		return XDP_DROP;
	}
	if (v == V_MATCH && answer_tier_on) {
		switch (try_answer(ctx, &pk)) {
		case A_ANSWERED:
			if (cnt)
				cnt->answered++;
			return XDP_TX;
		case A_DROP:
			if (cnt)
				cnt->dropped++;
			return XDP_DROP;
		default:
			if (cnt)
				cnt->answer_misses++;
		}
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
