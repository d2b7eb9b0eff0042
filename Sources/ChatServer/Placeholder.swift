enum _PlaceholderChatServer {}
