// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * xdptx: the XDP_TX reflector of the AF_XDP rig (bench/xdp/tier.sh, system
 * "xdptx"). It answers every IPv4 UDP query to port 53 inside the XDP
 * program, with no socket and no user-space process: the rig's ceiling for
 * any server that answers in the kernel.
 *
 * Per frame: Ethernet (no VLAN) / IPv4 (IHL 5, not a fragment) / UDP to
 * port 53 / a DNS header and one question whose name has no compression
 * pointer; anything else goes to the kernel (XDP_PASS). The frame is cut
 * (or grown) to the question plus one fixed record `<qname> 3600 IN A
 * 10.99.0.1` (name as a pointer to the question), QR and RA set (RCODE 0,
 * opcode and RD kept), QDCOUNT 1 ANCOUNT 1 NSCOUNT 0 ARCOUNT 0 (an OPT
 * record is cut off, as bench/src/bin/reflector.rs does); MACs, addresses
 * and ports swapped, IP length and header checksum fixed, UDP checksum 0
 * (allowed for IPv4), and the frame goes back out of the interface it came
 * in on (XDP_TX).
 *
 * Build: clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c xdptx.bpf.c -o xdptx.o
 * Load:  ip link set dev IF xdpdrv obj xdptx.o sec xdp   (off: ip link set dev IF xdp off)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define DNS_HDR 12
#define MAX_QNAME 255
#define ANSWER_LEN 16
#define HDRS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("xdp")
int xdptx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(0x3fff)))
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || udp->dest != bpf_htons(53))
		return XDP_PASS;
	__u8 *dns = (void *)(udp + 1);
	if ((void *)(dns + DNS_HDR) > end)
		return XDP_PASS;
	/* the end of the question name (labels only) */
	__u32 off = DNS_HDR;
	for (int i = 0; i < 128; i++) {
		if (off > DNS_HDR + MAX_QNAME)
			return XDP_PASS;
		__u8 *p = dns + off;
		if ((void *)(p + 1) > end)
			return XDP_PASS;
		__u8 l = *p;
		if (l == 0)
			break;
		if (l & 0xc0)
			return XDP_PASS;
		off += l + 1;
	}
	if (off > DNS_HDR + MAX_QNAME)
		return XDP_PASS;
	off += 1 + 4; /* root label, QTYPE, QCLASS */
	if ((void *)(dns + off) > end)
		return XDP_PASS;
	__u32 dns_len = off + ANSWER_LEN;
	int delta = (int)(HDRS + dns_len) - (int)(end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	ip = (void *)(eth + 1);
	udp = (void *)(ip + 1);
	dns = (void *)(udp + 1);
	if ((void *)(dns + DNS_HDR) > end || off > DNS_HDR + MAX_QNAME + 5)
		return XDP_DROP;
	__u8 *an = dns + off;
	if ((void *)(an + ANSWER_LEN) > end)
		return XDP_DROP;
	/* written byte by byte: a constant array would need a .rodata map */
	an[0] = 0xc0, an[1] = 0x0c;                       /* name: the question's */
	an[2] = 0, an[3] = 1, an[4] = 0, an[5] = 1;       /* A IN */
	an[6] = 0, an[7] = 0, an[8] = 0x0e, an[9] = 0x10; /* TTL 3600 */
	an[10] = 0, an[11] = 4;                           /* RDLENGTH */
	an[12] = 10, an[13] = 99, an[14] = 0, an[15] = 1; /* 10.99.0.1 */
	dns[2] |= 0x80;
	dns[3] = 0x80;
	dns[4] = 0, dns[5] = 1, dns[6] = 0, dns[7] = 1;
	dns[8] = 0, dns[9] = 0, dns[10] = 0, dns[11] = 0;

	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__be32 a = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = a;
	ip->tot_len = bpf_htons(sizeof(struct iphdr) + sizeof(struct udphdr) + dns_len);
	ip->ttl = 64;
	ip->check = 0;
	__u32 s = 0;
	__u16 *h = (void *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		s += h[i];
	ip->check = csum_fold(s);
	__be16 port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->len = bpf_htons(sizeof(struct udphdr) + dns_len);
	udp->check = 0;
	return XDP_TX;
}

char _license[] SEC("license") = "Dual MIT/GPL";
