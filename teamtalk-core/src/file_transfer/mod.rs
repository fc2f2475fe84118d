//! The file_server's transfer tasks as a state machine: a task per transfer, created on a
//! msg_server's request, joined by the two clients, with data relayed in blocks (online) or
//! stored and served (offline). The shell moves the bytes and does the disk I/O the drained
//! [`FileAction`]s ask for.
//!
//! Departures from the original: task ids are random 128-bit values chosen by the caller and
//! a login must name the task's own sender or receiver for its role; every task that
//! nobody works on expires; files have a size limit.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::ids::CommandId;
use crate::pdu::Pdu;
use crate::proto::file::{
    ImFileLoginReq, ImFileLoginRsp, ImFilePullDataReq, ImFilePullDataRsp, ImFileState,
};
use crate::proto::server::{ImFileTransferReq, ImFileTransferRsp};
use crate::time::{Machine, Now};

mod action;
pub use action::{FileAction, FileConn};

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

#[derive(Clone, Debug)]
struct Task {
    from: u32,
    to: u32,
    name: String,
    size: u32,
    offline: bool,
    touched_ms: u64,
    sender: Option<FileConn>,
    receiver: Option<FileConn>,
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

/// The tasks of one file_server as a state machine ([`Machine`], see the crate's "Run loop"):
/// feed it client connections and their frames, the msg_servers' transfer requests and the
/// blocks read from disk; perform the [`FileAction`]s drained from [`Machine::poll_output`];
/// wake it at [`Machine::poll_timeout`], when the next idle task or old offline file expires.
#[derive(Clone, Debug)]
pub struct FileTasks {
    limits: FileLimits,
    tasks: HashMap<String, Task>,
    /// Which task a connection logged into.
    conns: HashMap<FileConn, String>,
    /// Connections whose frames are handled: opened and not asked to close.
    open: HashSet<FileConn>,
    next_conn: u64,
    out: VecDeque<FileAction>,
}

impl FileTasks {
    /// An empty table.
    pub fn new(limits: FileLimits) -> FileTasks {
        FileTasks {
            limits,
            tasks: HashMap::new(),
            conns: HashMap::new(),
            open: HashSet::new(),
            next_conn: 0,
            out: VecDeque::new(),
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

    /// A client connected at `now`.
    pub fn handle_conn_opened(&mut self, _now: Now) -> FileConn {
        self.next_conn += 1;
        let conn = FileConn(self.next_conn);
        self.open.insert(conn);
        conn
    }

    /// `CID_OTHER_FILE_TRANSFER_REQ` from a msg_server at `now`: a new task with the id `id`
    /// (random, from the caller). The answer for the msg_server is returned, not queued (the
    /// msg_server links are the shell's): it echoes the request with the task id (result 1
    /// for an empty name, a zero or too large size, or an unknown mode).
    pub fn handle_transfer_request(
        &mut self,
        now: Now,
        req: ImFileTransferReq,
        id: String,
    ) -> ImFileTransferRsp {
        let now_ms = now.ms;
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

    /// Registers a stored offline file found on disk at start-up, at `now` (the original
    /// reloaded such tasks on demand); it is kept for the offline retention from `now`.
    pub fn handle_offline_restored(&mut self, now: Now, id: String, from: u32, to: u32, size: u32) {
        let now_ms = now.ms;
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

    /// A frame from client connection `conn` at `now`. Frames of connections that are not
    /// open, or were asked to close, are ignored.
    pub fn handle_frame(&mut self, now: Now, conn: FileConn, pdu: &Pdu) {
        if !self.open.contains(&conn) {
            tracing::debug!(%conn, "frame of a connection that is not open ignored");
            return;
        }
        let mut out = Vec::new();
        self.frame(conn, pdu, now.ms, &mut out);
        self.queue(out);
    }

    /// Queues `actions`; a connection asked to close is heard no more.
    fn queue(&mut self, actions: Vec<FileAction>) {
        for action in actions {
            if let FileAction::Close(conn) = action {
                self.open.remove(&conn);
            }
            self.out.push_back(action);
        }
    }

    fn frame(&mut self, conn: FileConn, pdu: &Pdu, now_ms: u64, out: &mut Vec<FileAction>) {
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
        conn: FileConn,
        req: ImFileLoginReq,
        seq: u16,
        now_ms: u64,
        out: &mut Vec<FileAction>,
    ) {
        let refuse = |out: &mut Vec<FileAction>| {
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
        conn: FileConn,
        req: ImFilePullDataReq,
        seq: u16,
        now_ms: u64,
        out: &mut Vec<FileAction>,
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
    fn data(
        &mut self,
        conn: FileConn,
        rsp: ImFilePullDataRsp,
        now_ms: u64,
        out: &mut Vec<FileAction>,
    ) {
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

    /// The shell read, at `now`, the block a [`FileAction::Load`] asked for.
    pub fn handle_loaded(
        &mut self,
        _now: Now,
        conn: FileConn,
        task_id: &str,
        offset: u32,
        data: Bytes,
        seq: u16,
    ) {
        let mut out = Vec::new();
        self.loaded(conn, task_id, offset, data, seq, &mut out);
        self.queue(out);
    }

    fn loaded(
        &mut self,
        conn: FileConn,
        task_id: &str,
        offset: u32,
        data: Bytes,
        seq: u16,
        out: &mut Vec<FileAction>,
    ) {
        if !self.open.contains(&conn) {
            return;
        }
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
    fn state(&mut self, conn: FileConn, state: ImFileState, out: &mut Vec<FileAction>) {
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

    fn task_of(&mut self, conn: FileConn, task_id: &str) -> Option<&mut Task> {
        if self.conns.get(&conn).map(String::as_str) != Some(task_id) {
            return None;
        }
        self.tasks.get_mut(task_id)
    }

    /// A client connection closed at `now` (on its own, or after [`FileAction::Close`]). An
    /// online task ends with either side; an offline upload that did not finish is dropped; a
    /// finished offline file stays for its receiver.
    pub fn handle_conn_closed(&mut self, now: Now, conn: FileConn) {
        self.open.remove(&conn);
        let mut out = Vec::new();
        self.closed(conn, now.ms, &mut out);
        self.queue(out);
    }

    fn closed(&mut self, conn: FileConn, now_ms: u64, out: &mut Vec<FileAction>) {
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
    fn expire(&mut self, now_ms: u64, out: &mut Vec<FileAction>) {
        let mut expired: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| self.expiry(t).is_some_and(|at| now_ms >= at))
            .map(|(id, _)| id.clone())
            .collect();
        expired.sort();
        for id in expired {
            self.tasks.remove(&id);
            out.push(FileAction::Forget(id));
        }
    }

    /// The receiver deleted the offline record of a finished offline file at `now`: the task
    /// and its file go.
    pub fn handle_removed(&mut self, _now: Now, task_id: &str) {
        if self.tasks.remove(task_id).is_some() {
            self.out.push_back(FileAction::Forget(task_id.to_owned()));
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

impl FileTasks {
    /// When the task may be dropped: `None` while somebody works on it.
    fn expiry(&self, task: &Task) -> Option<u64> {
        if task.sender.is_some() || task.receiver.is_some() {
            return None;
        }
        let keep_for = if task.offline && task.stored == task.size {
            self.limits.offline_retention_ms
        } else {
            self.limits.idle_ms
        };
        Some(task.touched_ms.saturating_add(keep_for))
    }
}

impl Machine for FileTasks {
    type Output = FileAction;

    fn poll_output(&mut self) -> Option<FileAction> {
        self.out.pop_front()
    }

    /// When the next task nobody works on, or the next offline file, expires.
    fn poll_timeout(&self) -> Option<u64> {
        self.tasks.values().filter_map(|t| self.expiry(t)).min()
    }

    fn handle_timeout(&mut self, now: Now) {
        let mut out = Vec::new();
        self.expire(now.ms, &mut out);
        self.queue(out);
    }
}

/// The file_server's request for the next block of an offline upload.
fn next_upload_pull(task_id: String, task: &Task) -> Pdu {
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
mod tests;
