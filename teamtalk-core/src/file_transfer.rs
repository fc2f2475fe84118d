//! The file_server's transfer tasks as a state machine (spec/servers.md §6, flows §8.10): a
//! task per transfer, created on a msg_server's request, joined by the two clients, with data
//! relayed in blocks (online) or stored and served (offline). The shell moves the bytes and
//! does the disk I/O the returned [`FileAction`]s ask for.
//!
//! Departures from the original: task ids are random 128-bit values chosen by the caller and
//! a login must name the task's own sender or receiver for its role; every task that
//! nobody works on expires; files have a size limit.

use std::collections::HashMap;
use std::hash::Hash;

use bytes::Bytes;

use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::file::{
    ImFileLoginReq, ImFileLoginRsp, ImFilePullDataReq, ImFilePullDataRsp, ImFileState,
};
use crate::proto::server::{ImFileTransferReq, ImFileTransferRsp};

/// Bytes per block, as the original.
pub const BLOCK: u32 = 32_768;

const ONLINE: i32 = 1;
const OFFLINE: i32 = 2;
const PEER_READY: i32 = 0;
const DONE: i32 = 3;
const SENDER: i32 = 1;
const RECEIVER: i32 = 2;
const UPLOADER: i32 = 3;
const DOWNLOADER: i32 = 4;

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAction<C> {
    /// Send a frame to a client.
    Send(C, Pdu),
    /// Close a client connection (after what was sent before).
    Close(C),
    /// Append an uploaded block to the task's offline file (creating it at offset 0).
    Store {
        /// The task.
        task: String,
        /// Where the block goes.
        offset: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Read a block of the task's offline file and hand it to [`FileTasks::loaded`].
    Load {
        /// The downloading connection.
        conn: C,
        /// The task.
        task: String,
        /// Where to read.
        offset: u32,
        /// How much.
        len: u32,
        /// The request's seq, for the answer.
        seq: u16,
    },
    /// The task is gone: delete its offline file if any.
    Forget(String),
}

#[derive(Clone, Debug)]
struct Task<C> {
    from: u32,
    to: u32,
    name: String,
    size: u32,
    offline: bool,
    touched_ms: u64,
    sender: Option<C>,
    receiver: Option<C>,
    /// Offline: bytes stored so far; the file is complete when it reaches `size`.
    stored: u32,
    /// The receiver's pending pull (online): its seq, to answer with it.
    pull_seq: Option<u16>,
}

/// Settings of the task table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// Largest file accepted (bytes).
    pub max_size: u32,
    /// A task nobody worked on for this long is dropped (ms). The original's TaskTimeout was
    /// 60 s, for finished tasks only.
    pub idle_ms: u64,
    /// Offline files are kept this long after upload (ms) unless downloaded and deleted.
    pub offline_retention_ms: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_size: 512 << 20,
            idle_ms: 60_000,
            offline_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The tasks of one file_server, with connections named `C`.
#[derive(Clone, Debug)]
pub struct FileTasks<C> {
    limits: FileLimits,
    tasks: HashMap<String, Task<C>>,
    /// Which task a connection logged into.
    conns: HashMap<C, String>,
}

impl<C: Copy + Eq + Hash> FileTasks<C> {
    /// An empty table.
    pub fn new(limits: FileLimits) -> FileTasks<C> {
        FileTasks {
            limits,
            tasks: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    /// Tasks alive.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is alive.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// `CID_OTHER_FILE_TRANSFER_REQ` from a msg_server: a new task with the id `id` (random,
    /// from the caller). The answer echoes the request with the task id (result 1 for an empty
    /// name, a zero or too large size, or an unknown mode).
    pub fn create(&mut self, req: ImFileTransferReq, id: String, now_ms: u64) -> ImFileTransferRsp {
        let valid = !req.file_name.is_empty()
            && req.file_size > 0
            && req.file_size <= self.limits.max_size
            && (req.trans_mode == ONLINE || req.trans_mode == OFFLINE)
            && req.from_user_id != 0
            && req.to_user_id != 0;
        if valid {
            self.tasks.insert(
                id.clone(),
                Task {
                    from: req.from_user_id,
                    to: req.to_user_id,
                    name: req.file_name.clone(),
                    size: req.file_size,
                    offline: req.trans_mode == OFFLINE,
                    touched_ms: now_ms,
                    sender: None,
                    receiver: None,
                    stored: 0,
                    pull_seq: None,
                },
            );
        }
        ImFileTransferRsp {
            result_code: u32::from(!valid),
            from_user_id: req.from_user_id,
            to_user_id: req.to_user_id,
            file_name: Some(req.file_name),
            file_size: Some(req.file_size),
            task_id: valid.then_some(id),
            trans_mode: Some(req.trans_mode),
            attach_data: req.attach_data,
        }
    }

    /// Registers a stored offline file found on disk at start-up (the original reloaded such
    /// tasks on demand).
    pub fn restore_offline(&mut self, id: String, from: u32, to: u32, size: u32, now_ms: u64) {
        self.tasks.insert(
            id,
            Task {
                from,
                to,
                name: String::new(),
                size,
                offline: true,
                touched_ms: now_ms,
                sender: None,
                receiver: None,
                stored: size,
                pull_seq: None,
            },
        );
    }

    /// A frame from client connection `conn`.
    pub fn frame(&mut self, conn: C, pdu: &Pdu, now_ms: u64, out: &mut Vec<FileAction<C>>) {
        let seq = pdu.seq_num();
        match pdu.command() {
            CommandId::OTHER_HEARTBEAT => out.push(FileAction::Send(conn, pdu.clone())),
            CommandId::FILE_LOGIN_REQ => match pdu.decode_body::<ImFileLoginReq>() {
                Ok(req) => self.login(conn, req, seq, now_ms, out),
                Err(_) => out.push(FileAction::Close(conn)),
            },
            CommandId::FILE_PULL_DATA_REQ => match pdu.decode_body::<ImFilePullDataReq>() {
                Ok(req) => self.pull(conn, req, seq, now_ms, out),
                Err(_) => out.push(FileAction::Close(conn)),
            },
            CommandId::FILE_PULL_DATA_RSP => match pdu.decode_body::<ImFilePullDataRsp>() {
                Ok(rsp) => self.data(conn, rsp, now_ms, out),
                Err(_) => out.push(FileAction::Close(conn)),
            },
            CommandId::FILE_STATE => match pdu.decode_body::<ImFileState>() {
                Ok(state) => self.state(conn, state, out),
                Err(_) => out.push(FileAction::Close(conn)),
            },
            _ => out.push(FileAction::Close(conn)),
        }
    }

    fn login(
        &mut self,
        conn: C,
        req: ImFileLoginReq,
        seq: u16,
        now_ms: u64,
        out: &mut Vec<FileAction<C>>,
    ) {
        let refuse = |out: &mut Vec<FileAction<C>>| {
            let answer = ImFileLoginRsp {
                result_code: 1,
                task_id: req.task_id.clone(),
            };
            out.push(FileAction::Send(conn, Pdu::encode_message(&answer, seq)));
            out.push(FileAction::Close(conn));
        };
        let Some(task) = self.tasks.get_mut(&req.task_id) else {
            return refuse(out);
        };
        // The role must fit the task's mode and the user its side.
        let ok = match req.file_role {
            SENDER => !task.offline && req.user_id == task.from && task.sender.is_none(),
            RECEIVER => !task.offline && req.user_id == task.to && task.receiver.is_none(),
            UPLOADER => {
                task.offline
                    && req.user_id == task.from
                    && task.sender.is_none()
                    && task.stored < task.size
            }
            DOWNLOADER => {
                task.offline
                    && req.user_id == task.to
                    && task.receiver.is_none()
                    && task.stored == task.size
            }
            _ => false,
        };
        if !ok || self.conns.contains_key(&conn) {
            return refuse(out);
        }
        if matches!(req.file_role, SENDER | UPLOADER) {
            task.sender = Some(conn);
        } else {
            task.receiver = Some(conn);
        }
        task.touched_ms = now_ms;
        self.conns.insert(conn, req.task_id.clone());
        let answer = ImFileLoginRsp {
            result_code: 0,
            task_id: req.task_id.clone(),
        };
        out.push(FileAction::Send(conn, Pdu::encode_message(&answer, seq)));
        match req.file_role {
            SENDER | RECEIVER => {
                if let (Some(_), Some(receiver)) = (task.sender, task.receiver) {
                    let ready = ImFileState {
                        state: PEER_READY,
                        task_id: req.task_id,
                        user_id: task.from,
                    };
                    out.push(FileAction::Send(receiver, Pdu::encode_message(&ready, 0)));
                }
            }
            UPLOADER => {
                out.push(FileAction::Send(conn, next_upload_pull(req.task_id, task)));
            }
            _ => {}
        }
    }

    /// A pull request: online ones go to the sender, offline downloads are read from disk.
    fn pull(
        &mut self,
        conn: C,
        req: ImFilePullDataReq,
        seq: u16,
        now_ms: u64,
        out: &mut Vec<FileAction<C>>,
    ) {
        let Some(task) = self.task_of(conn, &req.task_id) else {
            return out.push(FileAction::Close(conn));
        };
        if task.receiver != Some(conn) || req.data_size == 0 || req.data_size > BLOCK {
            return out.push(FileAction::Close(conn));
        }
        task.touched_ms = now_ms;
        if task.offline {
            if req.offset >= task.size {
                return out.push(FileAction::Close(conn));
            }
            let len = req.data_size.min(task.size - req.offset);
            out.push(FileAction::Load {
                conn,
                task: req.task_id,
                offset: req.offset,
                len,
                seq,
            });
        } else if let Some(sender) = task.sender {
            task.pull_seq = Some(seq);
            out.push(FileAction::Send(sender, Pdu::encode_message(&req, 0)));
        } else {
            out.push(FileAction::Close(conn));
        }
    }

    /// A block from the sender: relayed to the receiver (online) or stored (offline upload).
    fn data(&mut self, conn: C, rsp: ImFilePullDataRsp, now_ms: u64, out: &mut Vec<FileAction<C>>) {
        let Some(task) = self.task_of(conn, &rsp.task_id) else {
            return out.push(FileAction::Close(conn));
        };
        if task.sender != Some(conn) {
            return out.push(FileAction::Close(conn));
        }
        task.touched_ms = now_ms;
        if !task.offline {
            let Some(receiver) = task.receiver else {
                return out.push(FileAction::Close(conn));
            };
            let seq = task.pull_seq.take().unwrap_or(0);
            out.push(FileAction::Send(receiver, Pdu::encode_message(&rsp, seq)));
            return;
        }
        let len = u32::try_from(rsp.file_data.len()).unwrap_or(u32::MAX);
        if rsp.offset != task.stored || len == 0 || len > BLOCK || task.stored + len > task.size {
            return out.push(FileAction::Close(conn));
        }
        out.push(FileAction::Store {
            task: rsp.task_id.clone(),
            offset: rsp.offset,
            data: rsp.file_data,
        });
        task.stored += len;
        if task.stored < task.size {
            out.push(FileAction::Send(conn, next_upload_pull(rsp.task_id, task)));
        } else {
            let done = ImFileState {
                state: DONE,
                task_id: rsp.task_id,
                user_id: task.from,
            };
            out.push(FileAction::Send(conn, Pdu::encode_message(&done, 0)));
        }
    }

    /// The shell read a block for a download.
    pub fn loaded(
        &mut self,
        conn: C,
        task_id: &str,
        offset: u32,
        data: Bytes,
        seq: u16,
        out: &mut Vec<FileAction<C>>,
    ) {
        let Some(task) = self.task_of(conn, task_id) else {
            return;
        };
        let last =
            offset.saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX)) >= task.size;
        let block = ImFilePullDataRsp {
            result_code: 0,
            task_id: task_id.to_owned(),
            user_id: task.to,
            offset,
            file_data: data,
        };
        out.push(FileAction::Send(conn, Pdu::encode_message(&block, seq)));
        if last {
            let done = ImFileState {
                state: DONE,
                task_id: task_id.to_owned(),
                user_id: task.to,
            };
            out.push(FileAction::Send(conn, Pdu::encode_message(&done, 0)));
        }
    }

    /// CANCEL / REFUSE / DONE from a client: told to the peer; the sending connection closes.
    fn state(&mut self, conn: C, state: ImFileState, out: &mut Vec<FileAction<C>>) {
        if let Some(task) = self.task_of(conn, &state.task_id) {
            let peer = if task.sender == Some(conn) {
                task.receiver
            } else {
                task.sender
            };
            if let Some(peer) = peer {
                out.push(FileAction::Send(peer, Pdu::encode_message(&state, 0)));
            }
        }
        out.push(FileAction::Close(conn));
    }

    fn task_of(&mut self, conn: C, task_id: &str) -> Option<&mut Task<C>> {
        if self.conns.get(&conn).map(String::as_str) != Some(task_id) {
            return None;
        }
        self.tasks.get_mut(task_id)
    }

    /// A client connection closed. An online task ends with either side; an offline upload
    /// that did not finish is dropped; a finished offline file stays for its receiver.
    pub fn closed(&mut self, conn: C, now_ms: u64, out: &mut Vec<FileAction<C>>) {
        let Some(id) = self.conns.remove(&conn) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.touched_ms = now_ms;
        if task.sender == Some(conn) {
            task.sender = None;
        }
        if task.receiver == Some(conn) {
            task.receiver = None;
        }
        let end = !task.offline || task.stored < task.size;
        if end {
            for peer in [task.sender, task.receiver].into_iter().flatten() {
                self.conns.remove(&peer);
                out.push(FileAction::Close(peer));
            }
            self.tasks.remove(&id);
            out.push(FileAction::Forget(id));
        }
    }

    /// Drops tasks nobody works on any more, and offline files past their retention.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<FileAction<C>>) {
        let limits = self.limits;
        let mut expired: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.sender.is_none() && t.receiver.is_none())
            .filter(|(_, t)| {
                let keep_for = if t.offline && t.stored == t.size {
                    limits.offline_retention_ms
                } else {
                    limits.idle_ms
                };
                now_ms.saturating_sub(t.touched_ms) >= keep_for
            })
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.tasks.remove(&id);
            out.push(FileAction::Forget(id));
        }
    }

    /// Removes a finished offline file (its receiver deleted the offline record).
    pub fn remove(&mut self, task_id: &str, out: &mut Vec<FileAction<C>>) {
        if self.tasks.remove(task_id).is_some() {
            out.push(FileAction::Forget(task_id.to_owned()));
        }
    }

    /// The sender and receiver of a task.
    pub fn users(&self, task_id: &str) -> Option<(u32, u32)> {
        self.tasks.get(task_id).map(|t| (t.from, t.to))
    }

    /// The file name and size of a task.
    pub fn describe(&self, task_id: &str) -> Option<(&str, u32)> {
        self.tasks.get(task_id).map(|t| (t.name.as_str(), t.size))
    }
}

/// The file_server's request for the next block of an offline upload.
fn next_upload_pull<C>(task_id: String, task: &Task<C>) -> Pdu {
    let pull = ImFilePullDataReq {
        task_id,
        user_id: task.from,
        trans_mode: OFFLINE,
        offset: task.stored,
        data_size: BLOCK.min(task.size - task.stored),
    };
    Pdu::encode_message(&pull, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: i32, size: u32) -> ImFileTransferReq {
        ImFileTransferReq {
            from_user_id: 1,
            to_user_id: 2,
            file_name: "a.bin".into(),
            file_size: size,
            trans_mode: mode,
            attach_data: None,
        }
    }

    fn login(task: &str, user: u32, role: i32) -> Pdu {
        Pdu::encode_message(
            &ImFileLoginReq {
                user_id: user,
                task_id: task.into(),
                file_role: role,
            },
            7,
        )
    }

    fn sent(out: &[FileAction<u8>], to: u8) -> Vec<Pdu> {
        out.iter()
            .filter_map(|a| match a {
                FileAction::Send(c, p) if *c == to => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn online_transfer_relays_blocks_between_the_two_sides() {
        let mut t = FileTasks::new(FileLimits::default());
        let rsp = t.create(request(ONLINE, 40_000), "T1".into(), 0);
        assert_eq!((rsp.result_code, rsp.task_id.as_deref()), (0, Some("T1")));
        let mut out = Vec::new();
        t.frame(1, &login("T1", 1, SENDER), 0, &mut out);
        t.frame(2, &login("T1", 2, RECEIVER), 0, &mut out);
        let ready: ImFileState = sent(&out, 2).last().unwrap().decode_body().unwrap();
        assert_eq!(ready.state, PEER_READY);
        out.clear();
        let pull = ImFilePullDataReq {
            task_id: "T1".into(),
            user_id: 2,
            trans_mode: ONLINE,
            offset: 0,
            data_size: BLOCK,
        };
        t.frame(2, &Pdu::encode_message(&pull, 9), 0, &mut out);
        assert_eq!(
            sent(&out, 1)[0].command(),
            CommandId::FILE_PULL_DATA_REQ,
            "relayed to the sender"
        );
        out.clear();
        let block = ImFilePullDataRsp {
            result_code: 0,
            task_id: "T1".into(),
            user_id: 1,
            offset: 0,
            file_data: Bytes::from(vec![5; 100]),
        };
        t.frame(1, &Pdu::encode_message(&block, 0), 0, &mut out);
        let relayed = &sent(&out, 2)[0];
        assert_eq!(relayed.seq_num(), 9, "answered with the receiver's seq");
        out.clear();
        t.closed(1, 0, &mut out);
        assert!(
            out.contains(&FileAction::Close(2)) && out.contains(&FileAction::Forget("T1".into()))
        );
        assert!(t.is_empty());
    }

    #[test]
    fn logins_must_match_the_task_users_and_roles() {
        let mut t = FileTasks::new(FileLimits::default());
        t.create(request(ONLINE, 10), "T".into(), 0);
        for (user, role) in [(3, SENDER), (1, RECEIVER), (1, UPLOADER), (2, DOWNLOADER)] {
            let mut out = Vec::new();
            t.frame(9, &login("T", user, role), 0, &mut out);
            assert!(
                out.contains(&FileAction::Close(9)),
                "user {user} role {role} refused (Q-10)"
            );
        }
        let mut out = Vec::new();
        t.frame(9, &login("unknown", 1, SENDER), 0, &mut out);
        assert!(out.contains(&FileAction::Close(9)));
        assert_eq!(
            t.create(request(ONLINE, 0), "X".into(), 0).result_code,
            1,
            "empty file"
        );
        let big = FileLimits {
            max_size: 5,
            ..FileLimits::default()
        };
        assert_eq!(
            FileTasks::<u8>::new(big)
                .create(request(OFFLINE, 6), "Y".into(), 0)
                .result_code,
            1
        );
    }

    #[test]
    fn offline_upload_then_download() {
        let mut t = FileTasks::new(FileLimits::default());
        t.create(request(OFFLINE, BLOCK + 10), "T".into(), 0);
        let mut out = Vec::new();
        t.frame(1, &login("T", 1, UPLOADER), 0, &mut out);
        let ask: ImFilePullDataReq = sent(&out, 1)[1].decode_body().unwrap();
        assert_eq!((ask.offset, ask.data_size), (0, BLOCK));
        out.clear();
        let first = ImFilePullDataRsp {
            result_code: 0,
            task_id: "T".into(),
            user_id: 1,
            offset: 0,
            file_data: Bytes::from(vec![1; BLOCK as usize]),
        };
        t.frame(1, &Pdu::encode_message(&first, 0), 0, &mut out);
        assert!(matches!(&out[0], FileAction::Store { offset: 0, .. }));
        let ask: ImFilePullDataReq = sent(&out, 1)[0].decode_body().unwrap();
        assert_eq!((ask.offset, ask.data_size), (BLOCK, 10));
        out.clear();
        let wrong = ImFilePullDataRsp {
            offset: 5,
            ..first.clone()
        };
        let mut bad = Vec::new();
        t.clone()
            .frame(1, &Pdu::encode_message(&wrong, 0), 0, &mut bad);
        assert!(
            bad.contains(&FileAction::Close(1)),
            "blocks must come in order"
        );
        let last = ImFilePullDataRsp {
            offset: BLOCK,
            file_data: Bytes::from(vec![2; 10]),
            ..first
        };
        t.frame(1, &Pdu::encode_message(&last, 0), 0, &mut out);
        let done: ImFileState = sent(&out, 1).last().unwrap().decode_body().unwrap();
        assert_eq!(done.state, DONE);
        out.clear();
        t.closed(1, 0, &mut out);
        assert_eq!(t.len(), 1, "a finished offline file stays for the receiver");

        t.frame(2, &login("T", 2, DOWNLOADER), 0, &mut out);
        out.clear();
        let pull = ImFilePullDataReq {
            task_id: "T".into(),
            user_id: 2,
            trans_mode: OFFLINE,
            offset: BLOCK,
            data_size: BLOCK,
        };
        t.frame(2, &Pdu::encode_message(&pull, 4), 0, &mut out);
        assert_eq!(
            out,
            vec![FileAction::Load {
                conn: 2,
                task: "T".into(),
                offset: BLOCK,
                len: 10,
                seq: 4
            }]
        );
        out.clear();
        t.loaded(2, "T", BLOCK, Bytes::from(vec![2; 10]), 4, &mut out);
        let done: ImFileState = sent(&out, 2).last().unwrap().decode_body().unwrap();
        assert_eq!(done.state, DONE, "after the last block");
    }

    #[test]
    fn idle_tasks_and_old_offline_files_expire() {
        let limits = FileLimits {
            idle_ms: 1_000,
            offline_retention_ms: 10_000,
            ..FileLimits::default()
        };
        let mut t = FileTasks::<u8>::new(limits);
        t.create(request(ONLINE, 10), "never-joined".into(), 0);
        t.restore_offline("stored".into(), 1, 2, 10, 0);
        let mut out = Vec::new();
        t.tick(1_000, &mut out);
        assert_eq!(out, vec![FileAction::Forget("never-joined".into())], "Q-72");
        out.clear();
        t.tick(10_000, &mut out);
        assert_eq!(out, vec![FileAction::Forget("stored".into())]);
    }

    #[test]
    fn cancel_is_told_to_the_peer() {
        let mut t = FileTasks::new(FileLimits::default());
        t.create(request(ONLINE, 10), "T".into(), 0);
        let mut out = Vec::new();
        t.frame(1, &login("T", 1, SENDER), 0, &mut out);
        t.frame(2, &login("T", 2, RECEIVER), 0, &mut out);
        out.clear();
        let refuse = ImFileState {
            state: 2,
            task_id: "T".into(),
            user_id: 2,
        };
        t.frame(2, &Pdu::encode_message(&refuse, 0), 0, &mut out);
        assert_eq!(sent(&out, 1)[0].command(), CommandId::FILE_STATE);
        assert!(out.contains(&FileAction::Close(2)));
    }
}
