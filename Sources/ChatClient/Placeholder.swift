enum _PlaceholderChatClient {}
