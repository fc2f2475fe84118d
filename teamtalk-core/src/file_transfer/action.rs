//! What the file_server's state machine names and asks for: [`FileConn`] and [`FileAction`].

use bytes::Bytes;

#[cfg(doc)]
use crate::file_transfer::FileTasks;
use crate::pdu::Pdu;

/// A client connection of the file_server, named by [`FileTasks::handle_conn_opened`]; ids
/// are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileConn(pub(super) u64);

impl FileConn {
    /// The id as a number, for logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for FileConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "file-conn-{}", self.0)
    }
}

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// Send a frame to a client.
    Send(FileConn, Pdu),
    /// Close a client connection after sending what was queued for it before; report the
    /// close with [`FileTasks::handle_conn_closed`]. Its frames are ignored from now on.
    Close(FileConn),
    /// Append an uploaded block to the task's offline file (creating it at offset 0).
    Store {
        /// The task.
        task: String,
        /// Where the block goes.
        offset: u32,
        /// The bytes.
        data: Bytes,
    },
    /// Read a block of the task's offline file and hand it to [`FileTasks::handle_loaded`]
    /// (on failure: close the connection).
    Load {
        /// The downloading connection.
        conn: FileConn,
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
