package netdev

import (
	"errors"
	"sort"
	"strings"
)

// Per-netns sysctls under /proc/sys/net that Dump records and Restore
// writes back. Anything else in an image is rejected by Validate.
var (
	globalSysctls = []string{
		"ipv4/ip_forward",
		"ipv4/ip_default_ttl",
		"ipv4/ip_local_port_range",
		"ipv4/ip_local_reserved_ports",
		"ipv4/ip_nonlocal_bind",
		"ipv4/ip_unprivileged_port_start",
		"ipv4/ping_group_range",
		"ipv4/tcp_syncookies",
		"ipv4/tcp_keepalive_time",
		"ipv4/tcp_keepalive_intvl",
		"ipv4/tcp_keepalive_probes",
		"ipv4/tcp_fin_timeout",
		"ipv4/tcp_tw_reuse",
		"ipv4/icmp_echo_ignore_all",
		"ipv6/ip_nonlocal_bind",
		"core/somaxconn",
	}
	// conf/<dev>/<key> for dev in all, default and every link.
	confSysctls = map[string][]string{
		"ipv4": {"forwarding", "rp_filter", "proxy_arp", "accept_redirects", "send_redirects",
			"accept_source_route", "arp_ignore", "arp_announce", "route_localnet"},
		"ipv6": {"forwarding", "disable_ipv6", "accept_ra", "autoconf", "accept_dad",
			"accept_redirects", "hop_limit", "mtu", "addr_gen_mode"},
	}
)

// sysctlKeys lists the keys to dump for a netns with the given link names.
func sysctlKeys(links []string) []string {
	keys := append([]string(nil), globalSysctls...)
	devs := append([]string{"all", "default"}, links...)
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, d := range devs {
			for _, k := range confSysctls[fam] {
				if d == "all" && fam == "ipv6" && (k == "mtu" || k == "addr_gen_mode") {
					continue
				}
				keys = append(keys, fam+"/conf/"+d+"/"+k)
			}
		}
	}
	return keys
}

// validSysctl accepts a key from the known set (for conf/<dev>/, dev is all,
// default or a recorded link name) and a short value of printable
// characters (digits, signs, spaces, tabs, commas, dashes).
func validSysctl(key, val string, links map[string]bool) error {
	known := false
	for _, g := range globalSysctls {
		if key == g {
			known = true
		}
	}
	if !known {
		parts := strings.Split(key, "/")
		if len(parts) != 4 || parts[1] != "conf" {
			return errors.New("not a known sysctl")
		}
		if d := parts[2]; d != "all" && d != "default" && !links[d] {
			return errors.New("device is not a recorded link")
		}
		for _, k := range confSysctls[parts[0]] {
			if parts[3] == k {
				known = true
			}
		}
		if !known {
			return errors.New("not a known sysctl")
		}
	}
	if len(val) > 1024 {
		return errors.New("value too long")
	}
	for _, c := range val {
		if !(c >= '0' && c <= '9' || c == '-' || c == ' ' || c == '\t' || c == ',') {
			return errors.New("value has characters other than digits, '-', ',', space and tab")
		}
	}
	return nil
}

// sysctlOrder returns the keys of m in the order Restore writes them:
// writes to ipv4/ip_forward and conf/all/forwarding propagate to every
// device, and conf/default applies to devices made later, so globals and
// conf/all come first, then conf/default, then the devices.
func sysctlOrder(m map[string]string) []string {
	rank := func(k string) int {
		switch {
		case k == "ipv4/ip_forward" || k == "ipv4/conf/all/forwarding" || k == "ipv6/conf/all/forwarding":
			return 0
		case !strings.Contains(k, "/conf/") || strings.Contains(k, "/conf/all/"):
			return 1
		case strings.Contains(k, "/conf/default/"):
			return 2
		}
		return 3
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank(keys[i]), rank(keys[j])
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	return keys
}
