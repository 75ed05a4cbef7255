//! Helpers shared by the real-replica test files (each includes this module).

use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use tonic::transport::Channel;

/// Creates user "ann" and her chat "general" (no write ids); returns their ids.
pub async fn setup_chat(c: &mut ChatClient<Channel>) -> (u64, u64) {
    let user = c
        .create_user(api::CreateUserRequest {
            username: "ann".into(),
            write_id: None,
            password: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .user_id;
    let chat = c
        .create_chat(api::CreateChatRequest {
            user_id: user,
            chat_name: "general".into(),
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .chat_id;
    (user, chat)
}
