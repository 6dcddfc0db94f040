//! The classic tracepoint needs tracefs: aya reads the tracepoint's id there, and the
//! programs need the record layout from its `format` file.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use tcptrace_common::TracepointOffsets;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const EVENT: &str = "events/sock/inet_sock_set_state";

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed ({0}); mount it with `mount -t tracefs nodev {TRACEFS}`"
    )]
    Mount(nix::Error),
    #[error("the kernel has no sock:inet_sock_set_state tracepoint (needs Linux 4.16 or later)")]
    NoTracepoint,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the tracepoint format lacks field `{0}`")]
    Field(&'static str),
}

/// Where tracefs is, and whether tcptrace mounted it (it is left mounted: other tools
/// expect it there, and unmounting under them would be worse).
pub struct Tracefs {
    pub root: PathBuf,
    pub mounted_by_us: bool,
}

impl Tracefs {
    /// Finds tracefs, mounting it at /sys/kernel/tracing if it is missing.
    pub fn ensure() -> Result<Self, TracefsError> {
        for root in [TRACEFS, DEBUGFS_TRACING] {
            if Path::new(root).join("events").is_dir() {
                return Ok(Self { root: root.into(), mounted_by_us: false });
            }
        }
        nix::mount::mount(
            Some("nodev"),
            TRACEFS,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(TracefsError::Mount)?;
        Ok(Self { root: TRACEFS.into(), mounted_by_us: true })
    }

    /// Field offsets of the `sock:inet_sock_set_state` record on this kernel.
    pub fn inet_sock_set_state_offsets(&self) -> Result<TracepointOffsets, TracefsError> {
        if !self.root.join(EVENT).is_dir() {
            return Err(TracefsError::NoTracepoint);
        }
        parse_format(&self.format(EVENT)?)
    }

    /// The offset of `ret` in `syscalls:sys_exit_accept4` (needs CONFIG_FTRACE_SYSCALLS),
    /// which `sys_exit_accept` shares.
    pub fn accept_syscall_ret(&self) -> Result<u32, TracefsError> {
        field_offset(&self.format("events/syscalls/sys_exit_accept4")?, "ret")
    }

    fn format(&self, event: &str) -> Result<String, TracefsError> {
        let path = self.root.join(event).join("format");
        fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })
    }
}

/// The offset of field `name` in a tracepoint `format` file, from lines like
/// `field:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;`.
fn field_offset(text: &str, name: &'static str) -> Result<u32, TracefsError> {
    text.lines()
        .find_map(|line| {
            let mut parts = line.trim().split(';');
            let decl = parts.next()?.strip_prefix("field:")?;
            // The field name is the last word of the declaration, minus any `[N]`.
            let field = decl.split_whitespace().last()?.split('[').next()?;
            let offset = parts.find_map(|p| p.trim().strip_prefix("offset:"))?;
            (field == name).then(|| offset.parse().ok()).flatten()
        })
        .ok_or(TracefsError::Field(name))
}

/// Every field the tracepoint programs read from `sock:inet_sock_set_state`.
fn parse_format(text: &str) -> Result<TracepointOffsets, TracefsError> {
    let offset_of = |name| field_offset(text, name);
    Ok(TracepointOffsets {
        skaddr: offset_of("skaddr")?,
        oldstate: offset_of("oldstate")?,
        newstate: offset_of("newstate")?,
        sport: offset_of("sport")?,
        dport: offset_of("dport")?,
        family: offset_of("family")?,
        protocol: offset_of("protocol")?,
        saddr: offset_of("saddr")?,
        daddr: offset_of("daddr")?,
        saddr_v6: offset_of("saddr_v6")?,
        daddr_v6: offset_of("daddr_v6")?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // The 6.18 layout; 4.16-era kernels lacked `protocol`, which must be an error, not a
    // zero offset.
    const FORMAT: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";

    #[test]
    fn parses_every_field_offset() {
        let o = parse_format(FORMAT).unwrap();
        assert_eq!((o.skaddr, o.oldstate, o.newstate), (8, 16, 20));
        assert_eq!((o.sport, o.dport, o.family, o.protocol), (24, 26, 28, 30));
        assert_eq!((o.saddr, o.daddr, o.saddr_v6, o.daddr_v6), (32, 36, 40, 56));
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let old = FORMAT.replace("protocol", "proto_unused");
        assert!(matches!(parse_format(&old), Err(TracefsError::Field("protocol"))));
    }

    // ---- fuzz tier (crate::fuzz): any format text; and format files built from offsets ----

    /// The fields `parse_format` looks for, in `TracepointOffsets` order.
    const FIELDS: [&str; 11] = [
        "skaddr", "oldstate", "newstate", "sport", "dport", "family", "protocol", "saddr", "daddr",
        "saddr_v6", "daddr_v6",
    ];

    /// A `field:` line as tracefs writes it, for a field of any type and size.
    fn field_line() -> impl Fn(&str, u32, (&str, Option<u8>, u32, bool)) -> String {
        |name, offset, (ty, array, size, signed)| {
            let array = array.map(|n| format!("[{n}]")).unwrap_or_default();
            let signed = u8::from(signed);
            format!("\tfield:{ty} {name}{array};\toffset:{offset};\tsize:{size};\tsigned:{signed};")
        }
    }

    fn field_shape() -> impl Strategy<Value = (&'static str, Option<u8>, u32, bool)> {
        let ty = prop::sample::select(
            &["int", "unsigned short", "const void *", "__u8", "__u16", "char"][..],
        );
        (ty, prop::option::of(any::<u8>()), any::<u32>(), any::<bool>())
    }

    /// Text in the shape of a format file, any of it perhaps wrong.
    fn format_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(&FIELDS[..]).prop_map(str::to_owned),
            prop::sample::select(
                &["field:", "offset:", "size:", ";", "[", "]", "\t", "\n", " "][..]
            )
            .prop_map(str::to_owned),
            "-?[0-9]{1,12}",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_format_text_is_read_or_refused(text in prop_oneof![any::<String>(), format_like()]) {
            let _ = parse_format(&text);
        }

        #[test]
        fn a_field_line_parses_back(
            name in "[a-z_][a-z0-9_]{0,20}",
            offset in any::<u32>(),
            shape in field_shape(),
        ) {
            let line = field_line()(&name, offset, shape);
            let name: &'static str = Box::leak(name.into_boxed_str());
            prop_assert_eq!(field_offset(&line, name).ok(), Some(offset));
        }

        /// The eleven fields at any offsets, in any order, among the common fields and
        /// the file's other lines, parse back to those offsets.
        #[test]
        fn format_files_built_parse_back(
            offsets in any::<[u32; 11]>(),
            order in Just((0..FIELDS.len()).collect::<Vec<_>>()).prop_shuffle(),
            shapes in prop::collection::vec(field_shape(), FIELDS.len()),
        ) {
            let line = field_line();
            let mut text = String::from("name: inet_sock_set_state\nID: 2287\nformat:\n");
            text.push_str(&line("common_type", 0, ("unsigned short", None, 2, false)));
            text.push('\n');
            for &i in &order {
                text.push_str(&line(FIELDS[i], offsets[i], shapes[i]));
                text.push('\n');
            }
            text.push_str("\nprint fmt: \"family=%s protocol=%s sport=%hu\", REC->family\n");
            let [skaddr, oldstate, newstate, sport, dport, family, protocol, saddr, daddr, saddr_v6, daddr_v6] =
                offsets;
            let expected = TracepointOffsets {
                skaddr, oldstate, newstate, sport, dport, family, protocol, saddr, daddr,
                saddr_v6, daddr_v6,
            };
            prop_assert_eq!(parse_format(&text).ok(), Some(expected));
        }
    }
}
