//! `relay`: the ceiling. A process that speaks just enough of the protocol for the `chat`
//! and `group`-less runs: it answers any login (a new user id per new name), and forwards each
//! `CID_MSG_DATA` to the receiver's connections with an ack to the sender — no storage, no
//! checks, no other servers. What `chat` measures against it is the best any server could do
//! for this traffic on this machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use teamtalk_core::proto::base_define::UserInfo;
use teamtalk_core::proto::login::{ImLoginReq, ImLoginRes};
use teamtalk_core::proto::message::{ImMsgData, ImMsgDataAck};
use teamtalk_core::{CommandId, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    ids: HashMap<String, u32>,
    online: HashMap<u32, Vec<mpsc::UnboundedSender<Bytes>>>,
    next_msg_id: u32,
}

type Shared = Arc<Mutex<State>>;

/// Serves relay connections on `listener` forever.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let state: Shared = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(connection(stream, state.clone()));
    }
}

async fn connection(stream: TcpStream, state: Shared) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let write = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut out = BytesMut::new();
        while rx.recv_many(&mut batch, 128).await > 0 {
            for frame in batch.drain(..) {
                out.extend_from_slice(&frame);
            }
            if writer.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    });
    let mut decoder = PduDecoder::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut me = None;
    'read: loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let pdu = match decoder.decode(&mut buf) {
                Ok(Some(pdu)) => pdu,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            match pdu.command() {
                CommandId::OTHER_HEARTBEAT => {
                    let _ = tx.send(pdu.to_bytes());
                }
                CommandId::LOGIN_REQ_USERLOGIN => {
                    let Ok(request) = pdu.decode_body::<ImLoginReq>() else {
                        break 'read;
                    };
                    let id = {
                        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                        let next = u32::try_from(s.ids.len() + 1).unwrap_or(u32::MAX);
                        let id = *s.ids.entry(request.user_name.clone()).or_insert(next);
                        s.online.entry(id).or_default().push(tx.clone());
                        id
                    };
                    me = Some(id);
                    let answer = ImLoginRes {
                        server_time: 0,
                        result_code: 0,
                        result_string: None,
                        online_status: Some(1),
                        user_info: Some(UserInfo {
                            user_id: id,
                            user_real_name: request.user_name,
                            ..Default::default()
                        }),
                    };
                    let _ = tx.send(Pdu::encode_message(&answer, pdu.seq_num()).to_bytes());
                }
                CommandId::MSG_DATA => {
                    let Some(from) = me else { break 'read };
                    let Ok(mut data) = pdu.decode_body::<ImMsgData>() else {
                        continue;
                    };
                    let receivers = {
                        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                        s.next_msg_id = s.next_msg_id.wrapping_add(1);
                        data.msg_id = s.next_msg_id;
                        s.online
                            .get(&data.to_session_id)
                            .cloned()
                            .unwrap_or_default()
                    };
                    data.from_user_id = from;
                    let ack = ImMsgDataAck {
                        user_id: from,
                        session_id: data.to_session_id,
                        msg_id: data.msg_id,
                        session_type: 1,
                    };
                    let _ = tx.send(Pdu::encode_message(&ack, pdu.seq_num()).to_bytes());
                    let copy = Pdu::encode_message(&data, 0).to_bytes();
                    for receiver in receivers {
                        let _ = receiver.send(copy.clone());
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(id) = me {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = s.online.get_mut(&id) {
            list.retain(|t| !t.same_channel(&tx));
        }
    }
    drop(tx);
    let _ = write.await;
}
