//! A fake chat server for the load generator's tests: a real tonic server on loopback that
//! answers every call after a fixed delay, with made-up ids.

use std::time::Duration;

use telegraft::proto::chat::chat_server::{Chat, ChatServer};
use telegraft::proto::chat::*;
use tonic::{Request, Response, Status};

/// Answers every call after `delay`; `GetMessages` after `read_delay`.
struct SlowChat {
    delay: Duration,
    read_delay: Duration,
}

#[tonic::async_trait]
impl Chat for SlowChat {
    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(CreateUserResponse { user_id: 1 }))
    }
    async fn create_chat(
        &self,
        _: Request<CreateChatRequest>,
    ) -> Result<Response<CreateChatResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(CreateChatResponse { chat_id: 1 }))
    }
    async fn join_chat(
        &self,
        _: Request<JoinChatRequest>,
    ) -> Result<Response<JoinChatResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(JoinChatResponse {}))
    }
    async fn send_message(
        &self,
        _: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(SendMessageResponse { message_id: 1 }))
    }
    async fn get_messages(
        &self,
        _: Request<GetMessagesRequest>,
    ) -> Result<Response<GetMessagesResponse>, Status> {
        tokio::time::sleep(self.read_delay).await;
        Ok(Response::new(GetMessagesResponse {
            messages: vec![],
            has_more: false,
        }))
    }
    async fn get_chat_users(
        &self,
        _: Request<GetChatUsersRequest>,
    ) -> Result<Response<GetChatUsersResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(GetChatUsersResponse { users: vec![] }))
    }
}

/// Starts a fake server on a free loopback port; returns its address.
pub async fn serve(delay: Duration, read_delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ChatServer::new(SlowChat { delay, read_delay }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}
