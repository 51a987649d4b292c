//! `kdns --uninstall-xdp`: detaches and unpins the XDP program a previous
//! kdns left pinned under `xdp.pin_dir`, and says what it removed.

use std::path::Path;

use kdns_sys::xdp::pin::{self, Removed};

/// Removes the pins of `interfaces` under `pin_dir` (of every interface
/// there when `interfaces` is empty). Returns the lines to print: what was
/// removed, or that there was nothing; an error when something could not
/// be removed.
pub fn uninstall(pin_dir: &str, interfaces: &[String]) -> Result<Vec<String>, String> {
    if pin_dir.is_empty() {
        return Ok(vec![
            "xdp.pin_dir is \"\": kdns pins nothing, so there is nothing to remove (an unpinned XDP program goes away with its kdns)"
                .into(),
        ]);
    }
    let dir = Path::new(pin_dir);
    let mut removed = Vec::new();
    if interfaces.is_empty() {
        removed = pin::uninstall(dir, None).map_err(|e| e.to_string())?;
    } else {
        for ifname in interfaces {
            removed.extend(pin::uninstall(dir, Some(ifname)).map_err(|e| format!("{ifname}: {e}"))?);
        }
    }
    if removed.is_empty() {
        let which = if interfaces.is_empty() { String::new() } else { format!(" for {}", interfaces.join(", ")) };
        return Ok(vec![format!("nothing pinned under {pin_dir}{which}: no XDP program of kdns to remove")]);
    }
    Ok(removed.iter().flat_map(describe).collect())
}

/// What was removed from one interface's directory, in words.
fn describe(r: &Removed) -> Vec<String> {
    let ifname = r.dir.file_name().map_or_else(|| r.dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut lines = Vec::new();
    let pins = if r.pins.is_empty() { "nothing".to_string() } else { r.pins.join(", ") };
    match (r.link, r.holders.is_empty()) {
        (Some(l), true) if l.ifindex == 0 => {
            lines.push(format!("{ifname}: removed link {} (program {}; its interface was gone)", l.id, l.prog_id));
        }
        (Some(l), true) => lines.push(format!("{ifname}: detached program {} (link {})", l.prog_id, l.id)),
        (Some(l), false) => {
            let who: Vec<String> = r.holders.iter().map(|(pid, comm)| format!("{comm} (pid {pid})")).collect();
            lines.push(format!(
                "{ifname}: unpinned link {} (program {}), which stays attached until {} exits: it holds the link",
                l.id,
                l.prog_id,
                who.join(", ")
            ));
        }
        (None, _) => lines.push(format!("{ifname}: no pinned link (no program attached by kdns)")),
    }
    lines.push(format!("{ifname}: unpinned {pins}; removed {}", r.dir.display()));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_or_nothing_there_says_so() {
        let lines = uninstall("", &[]).unwrap();
        assert!(lines[0].contains("nothing to remove"), "{lines:?}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kdns");
        let lines = uninstall(missing.to_str().unwrap(), &["eth0".into()]).unwrap();
        assert_eq!(lines, [format!("nothing pinned under {} for eth0: no XDP program of kdns to remove", missing.display())]);
    }

    #[test]
    fn a_directory_off_bpffs_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("eth0")).unwrap();
        let err = uninstall(dir.path().to_str().unwrap(), &[]).unwrap_err();
        assert!(err.contains(&dir.path().display().to_string()) && err.contains("bpf"), "{err}");
        assert!(dir.path().join("eth0").exists(), "nothing removed off bpffs");
    }

    #[test]
    fn removals_are_told_in_words() {
        let link = pin::LinkInfo { id: 7, prog_id: 42, link_type: 6, ifindex: 3 };
        let r = Removed { dir: "/sys/fs/bpf/kdns/eth0".into(), link: Some(link), pins: vec!["link", "xsks_map"], holders: vec![] };
        assert_eq!(describe(&r), ["eth0: detached program 42 (link 7)", "eth0: unpinned link, xsks_map; removed /sys/fs/bpf/kdns/eth0"]);
        let held = Removed { holders: vec![(99, "kdns".into())], ..r.clone() };
        assert!(describe(&held)[0].contains("stays attached until kdns (pid 99) exits"), "{:?}", describe(&held));
        let gone = Removed { link: Some(pin::LinkInfo { ifindex: 0, ..link }), ..r };
        assert!(describe(&gone)[0].contains("its interface was gone"), "{:?}", describe(&gone));
    }
}
