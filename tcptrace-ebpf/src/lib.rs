#![no_std]
// This file exists to let cargo treat tcptrace-ebpf as a build-dependency of tcptrace (so
// edits rebuild the object); the programs live in main.rs and its modules.
